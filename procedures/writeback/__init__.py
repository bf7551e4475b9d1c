"""CRM writeback: the engagement events, the provider adapters and the queue worker."""
