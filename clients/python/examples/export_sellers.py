"""Export every seller whose consent is granted to a CSV file.

Usage:

    export NURTUREHUB_URL=http://127.0.0.1:8000 NURTUREHUB_TOKEN=nh_...
    python export_sellers.py sellers.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from nurturehub_client import Client, Contact, NurtureHubError

COLUMNS = ["id", "first_name", "last_name", "email", "phone", "postcode", "consent_timestamp"]


def row(contact: Contact) -> list[str]:
    consent = contact.consent_timestamp.isoformat() if contact.consent_timestamp else ""
    return [
        str(contact.id),
        contact.first_name or "",
        contact.last_name or "",
        contact.email or "",
        contact.phone or "",
        contact.postcode or "",
        consent,
    ]


def export(client: Client, path: Path) -> int:
    """Write the CSV; returns how many sellers it holds. Pages are fetched as the loop goes."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        for contact in client.contacts.iter_list(category=["seller"], consent_status="granted"):
            writer.writerow(row(contact))
            count += 1
    return count


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path("sellers.csv")
    try:
        with Client() as client:  # NURTUREHUB_URL and NURTUREHUB_TOKEN
            count = export(client, path)
    except NurtureHubError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(f"{count} sellers written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
