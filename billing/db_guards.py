"""Database triggers that keep finalized invoices as they were issued (run by a migration).

The services check an invoice's status under a row lock and the admin shows finalized invoices
read-only; these triggers are the last line: whatever path a write takes (a shell, a bug, a
raw UPDATE), the database refuses
- to change a non-draft invoice's number, period, tenant, currency or amounts, and
- to add, change or remove a line of a non-draft invoice.
Status may still move on (finalized → paid | void) with its dates: that is not an edit.
Deleting lines of a finalized invoice is refused as well (PostgreSQL); deleting a whole invoice is
refused by the PROTECT foreign keys of its lines.

A migration that alters billing_invoice or billing_invoiceline must run `remove_invoice_guards`
before its operations and `install_invoice_guards` after them: SQLite rebuilds an altered table
(the triggers that name it would break the rebuild, and its own go with it). See
0006_invoice_indexes; tests/billing/test_invoicing.py fails if the guards are missing.
"""

FROZEN_COLUMNS = ["number", "period", "tenant_id", "currency", "subtotal", "credits_applied", "tax_rate", "tax",
                  "total", "tax_note", "price_book_id", "issued_at", "due_date"]
MESSAGE = "finalized invoices never change: issue a credit note"

_PG_INVOICE = f"""
CREATE OR REPLACE FUNCTION billing_invoice_frozen() RETURNS trigger AS $$
BEGIN
    IF OLD.status <> 'draft' AND ({" OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in FROZEN_COLUMNS)}
                                  OR NEW.status = 'draft') THEN
        RAISE EXCEPTION 'invoice %: {MESSAGE}', OLD.number USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS billing_invoice_frozen ON billing_invoice;
CREATE TRIGGER billing_invoice_frozen BEFORE UPDATE ON billing_invoice
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_frozen();

CREATE OR REPLACE FUNCTION billing_invoiceline_frozen() RETURNS trigger AS $$
BEGIN
    -- Statement-level, over the transition tables: the close COPYs many lines at once, and one
    -- check per statement costs far less than one per row.
    -- (Nested IFs: a query naming new_rows must not even be planned for a DELETE, which has none.)
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        IF EXISTS (SELECT 1 FROM new_rows JOIN billing_invoice ON billing_invoice.id = new_rows.invoice_id
                    WHERE billing_invoice.status <> 'draft') THEN
            RAISE EXCEPTION 'invoice line: {MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF EXISTS (SELECT 1 FROM old_rows JOIN billing_invoice ON billing_invoice.id = old_rows.invoice_id
                    WHERE billing_invoice.status <> 'draft') THEN
            RAISE EXCEPTION 'invoice line: {MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS billing_invoiceline_frozen ON billing_invoiceline;
DROP TRIGGER IF EXISTS billing_invoiceline_frozen_insert ON billing_invoiceline;
DROP TRIGGER IF EXISTS billing_invoiceline_frozen_update ON billing_invoiceline;
DROP TRIGGER IF EXISTS billing_invoiceline_frozen_delete ON billing_invoiceline;
CREATE TRIGGER billing_invoiceline_frozen_insert AFTER INSERT ON billing_invoiceline
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION billing_invoiceline_frozen();
CREATE TRIGGER billing_invoiceline_frozen_update AFTER UPDATE ON billing_invoiceline
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION billing_invoiceline_frozen();
CREATE TRIGGER billing_invoiceline_frozen_delete AFTER DELETE ON billing_invoiceline
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION billing_invoiceline_frozen();
"""

_PG_DROP = """
DROP TRIGGER IF EXISTS billing_invoiceline_frozen ON billing_invoiceline;
DROP TRIGGER IF EXISTS billing_invoiceline_frozen_insert ON billing_invoiceline;
DROP TRIGGER IF EXISTS billing_invoiceline_frozen_update ON billing_invoiceline;
DROP TRIGGER IF EXISTS billing_invoiceline_frozen_delete ON billing_invoiceline;
DROP FUNCTION IF EXISTS billing_invoiceline_frozen();
DROP TRIGGER IF EXISTS billing_invoice_frozen ON billing_invoice;
DROP FUNCTION IF EXISTS billing_invoice_frozen();
"""

_SQLITE_CHANGED = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in FROZEN_COLUMNS)
_SQLITE_PARENT = "(SELECT status FROM billing_invoice WHERE id = {row}.invoice_id)"
_SQLITE = [
    f"""CREATE TRIGGER IF NOT EXISTS billing_invoice_frozen BEFORE UPDATE ON billing_invoice
        WHEN OLD.status <> 'draft' AND ({_SQLITE_CHANGED} OR NEW.status = 'draft')
        BEGIN SELECT RAISE(ABORT, 'invoice: {MESSAGE}'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS billing_invoiceline_frozen_insert BEFORE INSERT ON billing_invoiceline
        WHEN {_SQLITE_PARENT.format(row="NEW")} <> 'draft'
        BEGIN SELECT RAISE(ABORT, 'invoice line: {MESSAGE}'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS billing_invoiceline_frozen_update BEFORE UPDATE ON billing_invoiceline
        WHEN {_SQLITE_PARENT.format(row="OLD")} <> 'draft' OR {_SQLITE_PARENT.format(row="NEW")} <> 'draft'
        BEGIN SELECT RAISE(ABORT, 'invoice line: {MESSAGE}'); END""",
    # No DELETE trigger on SQLite: Django empties SQLite tables with DELETE between transactional
    # tests (PostgreSQL's TRUNCATE fires no row or DELETE triggers), and there the PROTECT foreign
    # key and the services are the guard against deleting a finalized invoice's lines.
]
_SQLITE_DROP = ["DROP TRIGGER IF EXISTS billing_invoice_frozen",
                "DROP TRIGGER IF EXISTS billing_invoiceline_frozen_insert",
                "DROP TRIGGER IF EXISTS billing_invoiceline_frozen_update",
                "DROP TRIGGER IF EXISTS billing_invoiceline_frozen_delete"]


def install_invoice_guards(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(_PG_INVOICE, None)
    elif vendor == "sqlite":
        for statement in _SQLITE:
            schema_editor.execute(statement)


def remove_invoice_guards(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(_PG_DROP, None)
    elif vendor == "sqlite":
        for statement in _SQLITE_DROP:
            schema_editor.execute(statement)
