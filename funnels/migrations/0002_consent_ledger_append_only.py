"""The consent ledger is append-only: PostgreSQL refuses any UPDATE of a row.

Erasure (a GDPR request) may still DELETE rows; it leaves a Suppression behind.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION funnels_consent_no_update() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'funnels_consentrecord is append-only: rows cannot be changed';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER funnels_consent_no_update
    BEFORE UPDATE ON funnels_consentrecord
    FOR EACH ROW EXECUTE FUNCTION funnels_consent_no_update();
"""
BACKWARD = """
DROP TRIGGER IF EXISTS funnels_consent_no_update ON funnels_consentrecord;
DROP FUNCTION IF EXISTS funnels_consent_no_update();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("funnels", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
