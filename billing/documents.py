"""An invoice as a document: the one plain-data reading of it that the API, the console's
printable page, the PDF and the CSV all show, so they cannot disagree.

`invoice_document(invoice)` reads the rows (selectors) into plain data with every amount as
text in the currency's minor units; `invoice_pdf` and `invoice_csv` render that data.
The PDF uses fpdf2 with its built-in Helvetica (no system fonts needed): text outside Latin-1
is transliterated where possible (— → -) and otherwise replaced by "?"; the HTML page shows
the exact text.
"""

import csv
import io
import unicodedata
from datetime import date, datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import Sum

from billing.models import CreditLedgerEntry, CreditNote, Invoice, Payment
from billing.selectors import invoice_lines, money_text

CSV_COLUMNS = ["invoice", "period", "position", "kind", "description", "meter", "deployment_id", "deployment",
               "hardware_tier", "quantity", "unit", "unit_price", "amount", "currency", "adjustment_for_period"]


def _quantity_text(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _day(value: date | datetime | None) -> str | None:
    if value is None:
        return None
    return (value.date() if isinstance(value, datetime) else value).isoformat()


def issuer() -> dict:
    return {"name": settings.SWITCHYARD_INVOICE_ISSUER_NAME, "address": settings.SWITCHYARD_INVOICE_ISSUER_ADDRESS,
            "country": settings.SWITCHYARD_INVOICE_ISSUER_COUNTRY, "vat_id": settings.SWITCHYARD_INVOICE_ISSUER_VAT_ID}


def _line_data(line, currency: str) -> dict:
    deployment = line.deployment
    return {
        "id": str(line.public_id), "position": line.position, "kind": line.kind, "description": line.description,
        "meter": line.meter.slug if line.meter_id else None,
        "deployment_id": str(deployment.public_id) if deployment else None,
        "deployment_name": line.deployment_name or None,
        "deployment_deleted": bool(deployment and deployment.status == "deleted"),
        "hardware_tier": line.hardware_tier or None, "quantity": _quantity_text(line.quantity), "unit": line.unit,
        "unit_price": line.unit_price_description, "amount": money_text(line.amount, currency),
        "is_adjustment": line.is_adjustment, "period_of_usage": _day(line.period_of_usage),
    }


def invoice_document(invoice: Invoice, *, today: date | None = None) -> dict:
    """Everything an invoice says, as plain data (amounts as text in the currency's minor units)."""
    currency = invoice.currency
    paid = Payment.objects.filter(invoice=invoice).aggregate(total=Sum("amount"))["total"] or Decimal(0)
    credited = CreditNote.objects.filter(invoice=invoice).aggregate(total=Sum("amount"))["total"] or Decimal(0)
    owed = Decimal(0) if invoice.status in (Invoice.Status.VOID, Invoice.Status.DRAFT) else \
        max(invoice.total - credited - paid, Decimal(0))
    bill_to = invoice.bill_to or {"name": invoice.tenant.name, "country": invoice.tenant.billing_country}
    return {
        "id": str(invoice.public_id), "number": invoice.number, "period": invoice.period.isoformat(),
        "period_label": f"{invoice.period:%B %Y}", "period_end": _day(invoice.period_end),
        "status": invoice.status, "overdue": invoice.is_overdue(today), "currency": currency,
        "issuer": issuer(), "bill_to": bill_to,
        "issued_at": invoice.issued_at, "due_date": _day(invoice.due_date), "paid_at": invoice.paid_at,
        "voided_at": invoice.voided_at, "void_reason": invoice.void_reason, "computed_at": invoice.computed_at,
        "subtotal": money_text(invoice.subtotal, currency),
        "credits_applied": money_text(invoice.credits_applied, currency),
        "tax_rate": _quantity_text(invoice.tax_rate), "tax": money_text(invoice.tax, currency),
        "tax_note": invoice.tax_note, "total": money_text(invoice.total, currency),
        "amount_paid": money_text(paid, currency), "amount_credited": money_text(credited, currency),
        "amount_due": money_text(owed, currency),
        "lines": [_line_data(line, currency) for line in invoice_lines(invoice)],
        "credits": [{"grant": str(entry.grant.public_id), "kind": entry.grant.kind,
                     "description": entry.grant.description, "amount": money_text(-entry.amount, currency)}
                    for entry in CreditLedgerEntry.objects.filter(invoice=invoice, kind=CreditLedgerEntry.Kind.APPLICATION)
                    .select_related("grant").order_by("id")],
        "payments": [{"id": str(payment.public_id), "amount": money_text(payment.amount, currency),
                      "received_on": payment.received_on.isoformat(), "reference": payment.reference}
                     for payment in Payment.objects.filter(invoice=invoice).order_by("received_on", "id")],
        "credit_notes": [{"id": str(note.public_id), "number": note.number, "reason": note.reason,
                          "issued_at": note.issued_at, "subtotal": money_text(note.subtotal, currency),
                          "tax": money_text(note.tax, currency), "amount": money_text(note.amount, currency),
                          "lines": note.lines}
                         for note in CreditNote.objects.filter(invoice=invoice).order_by("issued_at", "id")],
    }


def title_of(document: dict) -> str:
    if document["number"]:
        return f"Invoice {document['number']}"
    return f"Draft invoice, {document['period_label']}"


# --- CSV ----------------------------------------------------------------------------------------


def _cell(text: str | None) -> str:
    """Text a spreadsheet will not run as a formula."""
    text = text or ""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def invoice_csv(document: dict) -> str:
    """The invoice's lines as CSV (a header row, then one row per line)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for line in document["lines"]:
        writer.writerow([document["number"] or "draft", document["period"], line["position"], line["kind"],
                         _cell(line["description"]), line["meter"] or "", line["deployment_id"] or "",
                         _cell(line["deployment_name"]), line["hardware_tier"] or "", line["quantity"], line["unit"],
                         _cell(line["unit_price"]), line["amount"], document["currency"],
                         line["period_of_usage"] or ""])
    return out.getvalue()


# --- PDF ----------------------------------------------------------------------------------------

_LATIN1_STANDINS = {"—": "-", "–": "-", "…": "...", "’": "'", "‘": "'", "“": '"', "”": '"', "≥": ">=", "≤": "<=",
                    "€": "EUR", "→": "->", "−": "-"}


def pdf_text(text: object) -> str:
    """Text the PDF's built-in (Latin-1) font can show."""
    text = "".join(_LATIN1_STANDINS.get(char, char) for char in str(text or ""))
    if all(ord(char) < 256 for char in text):
        return text
    text = unicodedata.normalize("NFKD", text)
    return "".join(char for char in text if not unicodedata.combining(char)).encode("latin-1", "replace").decode(
        "latin-1")


def _amount(value: str, currency: str) -> str:
    return f"{value} {currency}"


def invoice_pdf(document: dict) -> bytes:
    """The invoice as an A4 PDF: issuer, customer, lines, credits, tax, totals, payments."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    pdf = FPDF(format="A4")
    pdf.set_title(pdf_text(title_of(document)))
    pdf.set_author(pdf_text(document["issuer"]["name"]))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    currency = document["currency"]
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def line_of_text(text, size=10, style="", height=5.5):
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(width, height, pdf_text(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    line_of_text(title_of(document), size=18, style="B", height=9)
    if document["status"] in ("draft", "void"):
        line_of_text("DRAFT - not a final invoice; amounts change as usage arrives." if document["status"] == "draft"
                     else f"VOID - {document['void_reason']}", style="B")
    issuer_, bill_to = document["issuer"], document["bill_to"]
    pdf.ln(2)
    line_of_text(f"From: {issuer_['name']}, {issuer_['address']}"
                 + (f", VAT {issuer_['vat_id']}" if issuer_["vat_id"] else ""), size=9)
    line_of_text(f"Bill to: {bill_to.get('name', '')}"
                 + (f", {bill_to['address']}" if bill_to.get("address") else "")
                 + f", {bill_to.get('country', '')}"
                 + (f", VAT {bill_to['vat_id']}" if bill_to.get("vat_id") else ""), size=9)
    facts = [f"Period: {document['period_label']} (UTC)"]
    if document["issued_at"]:
        facts.append(f"Issued: {_day(document['issued_at'])}")
    if document["due_date"]:
        facts.append(f"Due: {document['due_date']}")
    line_of_text("   ".join(facts), size=9)
    pdf.ln(3)

    pdf.set_font("Helvetica", "", 8.5)
    with pdf.table(col_widths=(60, 14, 18), text_align=("LEFT", "RIGHT", "RIGHT"), line_height=4.6,
                   first_row_as_headings=True) as table:
        table.row(["Description", "Quantity", f"Amount ({currency})"])
        for line in document["lines"]:
            description = line["description"]
            if line["unit_price"]:
                description += f"\n{line['unit_price']}"
            quantity = f"{line['quantity']} {line['unit']}".strip() if line["meter"] else ""
            table.row([pdf_text(description), pdf_text(quantity), line["amount"]])
        if not document["lines"]:
            table.row(["No usage this month.", "", _amount("0", currency)])
    pdf.ln(3)

    totals = [("Subtotal", document["subtotal"])]
    if document["credits"] or document["credits_applied"] != money_text(Decimal(0), currency):
        totals.append(("Credits applied", f"-{document['credits_applied']}"))
    totals.append((f"Tax ({document['tax_rate']} %)", document["tax"]))
    totals.append(("Total", document["total"]))
    if document["status"] not in ("draft", "void"):
        if document["amount_credited"] != money_text(Decimal(0), currency):
            totals.append(("Credit notes", f"-{document['amount_credited']}"))
        totals.append(("Paid", document["amount_paid"]))
        totals.append(("Amount due", document["amount_due"]))
    for label, value in totals:
        pdf.set_font("Helvetica", "B" if label in ("Total", "Amount due") else "", 10)
        pdf.cell(width - 45, 6, pdf_text(label), align="R")
        pdf.cell(45, 6, pdf_text(_amount(value, currency)), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if document["tax_note"]:
        pdf.ln(2)
        line_of_text(document["tax_note"], size=9, style="I")
    for note in document["credit_notes"]:
        line_of_text(f"Credit note {note['number']}: -{note['amount']} {currency} ({note['reason']})", size=9)
    for payment in document["payments"]:
        line_of_text(f"Payment received {payment['received_on']}: {payment['amount']} {currency} "
                     f"(ref. {payment['reference']})", size=9)
    return bytes(pdf.output())
