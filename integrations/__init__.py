"""Everything about talking to the agencies' CRMs: one module per provider (integrations/providers/),
and the long-running workers that deliver writeback and bring contacts in. Outside procedures/,
which is the wire API; server/ never imports it."""
