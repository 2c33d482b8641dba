"""Back office for money: billing profiles, price books (with their prices, validated by
billing.rating's rules), credit grants and their ledger, invoices (finalize, void, record a
payment, issue a credit note), and revenue per day by hardware tier. Staff only.

Invoices, lines, ledger entries, payments and credit notes are read-only here: they change only
through the services (billing.invoicing), which lock the invoice and check its status — a
finalized invoice is never edited, only paid, voided or corrected by a credit note.
"""

from datetime import date
from decimal import Decimal, InvalidOperation

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from billing import invoicing, rating
from billing.budgets import budget_delete, budget_fields_checked, budget_lift, budget_update
from billing.models import (
    BillingProfile,
    Budget,
    BudgetAction,
    BudgetAlert,
    CreditGrant,
    CreditLedgerEntry,
    CreditNote,
    Invoice,
    InvoiceLine,
    Meter,
    Payment,
    Price,
    PriceBook,
)
from billing.money import CurrencyError, require_rounded, validate_currency
from billing.pricebooks import price_from_row
from billing.revenue import revenue_by_day_and_tier
from billing.tax import vat_id_error
from tenants.admin import ReadOnlyAdmin, staff_actor
from tenants.errors import ServiceError

# --- Billing profiles -------------------------------------------------------------------------


class BillingProfileForm(forms.ModelForm):
    class Meta:
        model = BillingProfile
        fields = ["tenant", "legal_name", "address", "vat_id", "is_business", "invoice_email"]

    def clean(self):
        data = super().clean()
        tenant, vat_id = data.get("tenant"), (data.get("vat_id") or "").strip()
        if tenant and vat_id and (problem := vat_id_error(vat_id, tenant.billing_country)):
            # Only EU VAT ids can be checked; outside the EU the id is printed as given.
            from billing.tax import vat_rates

            if tenant.billing_country in vat_rates().eu_member_states:
                self.add_error("vat_id", problem)
        return data


class MeterForm(forms.ModelForm):
    class Meta:
        model = Meter
        fields = ["slug", "name", "unit", "description", "event_type", "aggregation", "value_property",
                  "dimensions", "per_tier", "active"]

    def clean_dimensions(self):
        dimensions = self.cleaned_data["dimensions"] or []
        if not isinstance(dimensions, list) or not all(isinstance(d, str) and d.strip() for d in dimensions):
            raise ValidationError('A list of keys of the event\'s data, e.g. ["region", "model"].')
        if len(set(dimensions)) != len(dimensions):
            raise ValidationError("Each dimension once.")
        return dimensions

    def clean(self):
        cleaned = super().clean()
        if "aggregation" not in self.fields:  # a saved meter: its meaning is read-only
            return cleaned
        if cleaned.get("aggregation") != Meter.Aggregation.COUNT and not cleaned.get("value_property"):
            self.add_error("value_property", "Which key of the event's data to aggregate (only `count` needs none).")
        return cleaned


@admin.register(Meter)
class MeterAdmin(admin.ModelAdmin):
    """Staff add meters; ingestion picks them up with the next batch (events stored before are not
    re-aggregated). Built-in meters are read-only: invoices and the collectors rely on them."""

    form = MeterForm
    list_display = ["slug", "name", "event_type", "aggregation", "value_property", "per_tier", "built_in", "active"]
    list_filter = ["built_in", "active", "aggregation"]
    search_fields = ["slug", "name", "event_type"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.built_in:
            return [*MeterForm.Meta.fields, "built_in"]
        if obj is not None:  # the rollups already written are keyed by the meter: its meaning stays
            return ["slug", "event_type", "aggregation", "value_property", "dimensions", "per_tier"]
        return []

    def has_delete_permission(self, request, obj=None):
        return False  # rollups and prices refer to meters; deactivate instead


@admin.register(BillingProfile)
class BillingProfileAdmin(admin.ModelAdmin):
    form = BillingProfileForm
    list_display = ["tenant", "legal_name", "vat_id", "is_business", "invoice_email"]
    search_fields = ["tenant__name", "legal_name", "vat_id"]
    autocomplete_fields = ["tenant"]


# --- Price books --------------------------------------------------------------------------------

# Which form field a rating error path belongs to ("tiers[1].up_to" → tiers).
_PRICE_FIELDS = {"meter", "hardware_tier", "model", "unit_price", "tiers", "package_size", "free_units", "minimum"}


def _field_of(path: str) -> str | None:
    head = path.split(".")[0].split("[")[0]
    return head if head in _PRICE_FIELDS else None


class PriceForm(forms.ModelForm):
    class Meta:
        model = Price
        fields = ["meter", "hardware_tier", "model", "unit_price", "tiers", "package_size", "free_units", "minimum"]
        widgets = {"tiers": forms.Textarea(attrs={"rows": 3, "cols": 60})}

    def clean(self):
        data = super().clean()
        if self.errors or not data.get("meter"):
            return data
        candidate = Price(**{name: data.get(name) for name in self.Meta.fields})
        candidate.tiers = data.get("tiers") or []
        candidate.free_units = data.get("free_units") or Decimal(0)
        candidate.minimum = data.get("minimum") or Decimal(0)
        try:
            self.rated = price_from_row(candidate, data["meter"].slug)
        except rating.PriceError as error:
            for where, message in error.errors:
                field = _field_of(where)
                self.add_error(field, f"{where}: {message}" if field and where != field else message)
        except (TypeError, InvalidOperation, AttributeError):
            self.add_error("tiers", 'Tiers are a list like [{"up_to": "1000", "unit_price": "0.001"}, '
                                    '{"up_to": null, "unit_price": "0.0005"}].')
        return data


class PriceFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        book = self.instance
        prices = [form.rated for form in self.forms
                  if hasattr(form, "rated") and not self._should_delete_form(form) and form.cleaned_data]
        if any(self.errors):
            return
        try:
            rating.PriceBook(name=book.name or "book", currency=book.currency, prices=tuple(prices))
        except (rating.PriceError, CurrencyError) as error:
            raise ValidationError(str(error)) from None


class PriceInline(admin.TabularInline):
    model = Price
    form = PriceForm
    formset = PriceFormSet
    extra = 0


class PriceBookForm(forms.ModelForm):
    class Meta:
        model = PriceBook
        fields = ["name", "currency", "tenant", "is_default", "discount_percent", "minimum_commitment",
                  "effective_from", "effective_until"]

    def clean_currency(self):
        try:
            return validate_currency(self.cleaned_data["currency"])
        except CurrencyError as error:
            raise ValidationError(str(error)) from None

    def clean(self):
        data = super().clean()
        if data.get("is_default") and data.get("tenant"):
            self.add_error("is_default", "A tenant's contract cannot be a default book: clear the tenant or this box.")
        if data.get("tenant") and data.get("currency") and data["tenant"].currency != data["currency"]:
            self.add_error("currency", f"{data['tenant']} is billed in {data['tenant'].currency}.")
        commitment, currency = data.get("minimum_commitment"), data.get("currency")
        if commitment is not None and currency and "currency" not in self.errors:
            try:
                require_rounded(commitment, currency, "minimum commitment")
            except CurrencyError as error:
                self.add_error("minimum_commitment", str(error))
        for day_field in ("effective_from", "effective_until"):
            if data.get(day_field) and data[day_field].day != 1:
                self.add_error(day_field, "Contracts start and end with whole months: use the first of a month.")
        return data


@admin.register(PriceBook)
class PriceBookAdmin(admin.ModelAdmin):
    """Edit the books; each save is checked with billing.rating's rules (the import command's).
    Invoices keep the prices they were rated with, whatever is changed here later."""

    form = PriceBookForm
    list_display = ["name", "currency", "is_default", "tenant", "discount_percent", "minimum_commitment",
                    "effective_from", "effective_until"]
    list_filter = ["currency", "is_default"]
    search_fields = ["name", "tenant__name", "tenant__slug"]
    autocomplete_fields = ["tenant"]
    inlines = [PriceInline]

    def save_model(self, request, obj, form, change):
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)


# --- Credits ------------------------------------------------------------------------------------


class CreditLedgerInline(admin.TabularInline):
    model = CreditLedgerEntry
    extra = 0
    can_delete = False
    fields = ["created_at", "kind", "amount", "currency", "invoice", "note"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class CreditGrantForm(forms.ModelForm):
    class Meta:
        model = CreditGrant
        fields = ["tenant", "kind", "amount", "currency", "effective_at", "expires_at", "priority", "description"]

    currency = forms.CharField(max_length=3, required=False, help_text="Empty: the tenant's currency.")


@admin.register(CreditGrant)
class CreditGrantAdmin(admin.ModelAdmin):
    """Granting credit writes the grant and its first ledger entry (credit_grant_create); a grant
    is never edited afterwards — its ledger tells what became of it."""

    form = CreditGrantForm
    list_display = ["tenant", "kind", "amount", "currency", "balance", "effective_at", "expires_at", "priority",
                    "created_at"]
    list_filter = ["kind", "currency"]
    search_fields = ["tenant__name", "description"]
    autocomplete_fields = ["tenant"]
    inlines = [CreditLedgerInline]

    def get_queryset(self, request):
        from django.db.models import Sum

        return super().get_queryset(request).annotate(ledger_balance=Sum("ledger__amount"))

    @admin.display(description="Balance")
    def balance(self, grant):
        return getattr(grant, "ledger_balance", None)

    def get_readonly_fields(self, request, obj=None):
        return self.form.Meta.fields if obj is not None else []

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # a new grant's ledger is written by the service

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            return  # read-only: nothing to save
        data = form.cleaned_data
        try:
            grant = invoicing.credit_grant_create(
                actor=staff_actor(request, data["tenant"]), kind=data["kind"], amount=data["amount"],
                currency=data.get("currency") or None, effective_at=data.get("effective_at"),
                expires_at=data.get("expires_at"), priority=data["priority"], description=data.get("description", ""))
        except ServiceError as error:
            raise ValidationError(error.message) from None
        obj.pk = grant.pk
        obj.public_id = grant.public_id

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if obj is None:
            form = _with_service_check(form)
        return form


def _with_service_check(form_class):
    """The add form runs credit_grant_create's checks as form validation, so a refusal is shown
    beside the fields, not as an error page."""

    class Checked(form_class):
        def clean(self):
            data = super().clean()
            tenant, amount = data.get("tenant"), data.get("amount")
            if tenant is None or amount is None:
                return data
            currency = data.get("currency") or tenant.currency
            try:
                validate_currency(currency)
                require_rounded(amount, currency, "amount")
            except CurrencyError as error:
                self.add_error("amount", str(error))
                return data
            if currency != tenant.currency:
                self.add_error("currency", f"{tenant} is billed in {tenant.currency}.")
            if amount <= 0:
                self.add_error("amount", "Must be greater than zero.")
            expires, effective = data.get("expires_at"), data.get("effective_at")
            if expires and effective and expires <= effective:
                self.add_error("expires_at", "Must be after effective_at.")
            return data

    return Checked


@admin.register(CreditLedgerEntry)
class CreditLedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "tenant", "grant", "kind", "amount", "currency", "invoice", "note"]
    list_filter = ["kind", "currency"]
    search_fields = ["tenant__name", "note", "invoice__number"]


# --- Invoices -----------------------------------------------------------------------------------


class ReadOnlyInline(admin.TabularInline):
    """Rows shown beside their invoice, changed only through the services."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False


class InvoiceLineInline(ReadOnlyInline):
    model = InvoiceLine
    fields = ["position", "description", "quantity", "unit", "unit_price_description", "amount", "period_of_usage"]


class PaymentInline(ReadOnlyInline):
    model = Payment
    fields = ["received_on", "amount", "currency", "reference", "recorded_by", "created_at"]


class CreditNoteInline(ReadOnlyInline):
    model = CreditNote
    fields = ["number", "issued_at", "reason", "subtotal", "tax", "amount", "issued_by"]


class VoidForm(forms.Form):
    reason = forms.CharField(max_length=300, help_text="Printed on the void invoice and kept in the audit log.")


class PaymentForm(forms.Form):
    amount = forms.DecimalField(max_digits=20, decimal_places=4)
    received_on = forms.DateField(initial=date.today, help_text="YYYY-MM-DD")
    reference = forms.CharField(max_length=120, help_text="Bank reference, transaction id …")


class CreditNoteForm(forms.Form):
    description = forms.CharField(max_length=200, help_text="What is credited, e.g. “SLA credit, outage 3 January”.")
    amount = forms.DecimalField(max_digits=20, decimal_places=4, help_text="Net; tax is added at the invoice's rate.")
    reason = forms.CharField(max_length=300)


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    """Invoices are computed, never typed in: every field is read-only. The actions and the buttons
    on an invoice's page call the services (finalize, void, payment, credit note)."""

    list_display = ["__str__", "tenant", "period", "status", "overdue", "total", "currency", "invoicing_status",
                    "claimed_at", "close_error"]
    list_filter = ["status", "invoicing_status", "period", "currency"]
    search_fields = ["number", "tenant__name", "tenant__slug"]
    date_hierarchy = "period"
    inlines = [InvoiceLineInline, PaymentInline, CreditNoteInline]
    actions = ["finalize", "refresh_drafts"]
    change_form_template = "admin/billing/invoice/change_form.html"

    @admin.display(boolean=True, description="Overdue")
    def overdue(self, invoice):
        return invoice.is_overdue()

    def has_change_permission(self, request, obj=None):
        return request.method in ("GET", "HEAD") and request.user.is_staff

    @admin.action(description="Finalize now (drafts of months that are over)")
    def finalize(self, request, queryset):
        done, refused = 0, []
        for invoice in queryset.filter(status=Invoice.Status.DRAFT):
            try:
                invoicing.invoice_finalize(invoice=invoice)
                done += 1
            except ServiceError as error:
                refused.append(f"{invoice}: {error.message}")
        skipped = queryset.exclude(status=Invoice.Status.DRAFT).count()
        if done:
            self.message_user(request, f"{done} invoice(s) finalized.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} invoice(s) were not drafts: a finalized invoice never changes.",
                              messages.WARNING)
        for message in refused:
            self.message_user(request, message, messages.ERROR)

    @admin.action(description="Recompute drafts from the usage now")
    def refresh_drafts(self, request, queryset):
        drafts = list(queryset.filter(status=Invoice.Status.DRAFT).select_related("tenant"))
        for invoice in drafts:
            invoicing.invoice_refresh_draft(tenant=invoice.tenant, period=invoice.period)
        self.message_user(request, f"{len(drafts)} draft(s) recomputed; other invoices are final and unchanged.",
                          messages.SUCCESS)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:invoice_id>/void/", wrap(self.void_view), name="billing_invoice_void"),
            path("<int:invoice_id>/payment/", wrap(self.payment_view), name="billing_invoice_payment"),
            path("<int:invoice_id>/credit-note/", wrap(self.credit_note_view), name="billing_invoice_credit_note"),
            path("revenue/", wrap(self.revenue_view), name="billing_revenue"),
            *super().get_urls(),
        ]

    def _staff_form(self, request, invoice_id, form_class, title, act):
        """A small form page for one service call on one invoice; errors are shown on the form."""
        if not request.user.is_staff:
            raise PermissionDenied
        invoice = get_object_or_404(Invoice, pk=invoice_id)
        form = form_class(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                message = act(invoice, form.cleaned_data)
            except ServiceError as error:
                form.add_error(None, error.message)
            else:
                self.message_user(request, message, messages.SUCCESS)
                return redirect(reverse("admin:billing_invoice_change", args=[invoice.pk]))
        context = {**self.admin_site.each_context(request), "title": f"{title}: {invoice}", "form": form,
                   "invoice": invoice, "opts": self.model._meta}
        return TemplateResponse(request, "admin/billing/invoice/action_form.html", context)

    def void_view(self, request, invoice_id):
        def act(invoice, data):
            invoicing.invoice_void(actor=staff_actor(request, invoice.tenant), invoice=invoice, reason=data["reason"])
            return f"{invoice} is void; the credits it used are back on their grants."
        return self._staff_form(request, invoice_id, VoidForm, "Void", act)

    def payment_view(self, request, invoice_id):
        def act(invoice, data):
            invoicing.payment_record(actor=staff_actor(request, invoice.tenant), invoice=invoice,
                                     amount=data["amount"], received_on=data["received_on"],
                                     reference=data["reference"])
            invoice.refresh_from_db()
            return f"Payment recorded; {invoice} is {invoice.status}."
        return self._staff_form(request, invoice_id, PaymentForm, "Record a payment", act)

    def credit_note_view(self, request, invoice_id):
        def act(invoice, data):
            note = invoicing.credit_note_issue(actor=staff_actor(request, invoice.tenant), invoice=invoice,
                                               lines=[(data["description"], data["amount"])], reason=data["reason"])
            return f"Credit note {note.number} issued: −{note.amount} {note.currency}."
        return self._staff_form(request, invoice_id, CreditNoteForm, "Issue a credit note", act)

    def revenue_view(self, request):
        """Revenue per usage day and hardware tier, from finalized invoices (docs/billing.md)."""
        if not request.user.is_staff:
            raise PermissionDenied
        today = timezone.now().date()
        try:
            months = max(1, min(24, int(request.GET.get("months", "3"))))
        except ValueError:
            months = 3
        since = None
        if request.GET.get("since"):
            try:
                since = date.fromisoformat(f"{request.GET['since']}-01")
            except ValueError:
                self.message_user(request, "since: write the month as YYYY-MM.", messages.ERROR)
        report = revenue_by_day_and_tier(months=months, today=today, since=since)
        context = {**self.admin_site.each_context(request), "title": "Revenue per day by tier", "report": report,
                   "months": months, "opts": self.model._meta}
        return TemplateResponse(request, "admin/billing/revenue.html", context)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["received_on", "invoice", "tenant", "amount", "currency", "reference", "recorded_by"]
    search_fields = ["reference", "invoice__number", "tenant__name"]


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdmin):
    list_display = ["number", "invoice", "tenant", "amount", "currency", "reason", "issued_at"]
    search_fields = ["number", "invoice__number", "tenant__name"]



# --- Budgets ------------------------------------------------------------------------------------
# Budgets are the tenants' own (they make them in the console or the API); staff may look, change
# one through the service (audited under their email), delete it, or lift its action. Alerts and
# actions are history: read-only.


class BudgetForm(forms.ModelForm):
    class Meta:
        model = Budget
        fields = ["amount", "currency", "thresholds", "action", "active"]

    def clean(self):
        data = super().clean()
        if self.instance.pk and not self.errors:
            try:
                budget_fields_checked(self.instance.tenant, {name: data[name] for name in self.Meta.fields})
            except ServiceError as error:
                self.add_error(error.field if error.field in self.fields else None, error.message)
        return data


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    form = BudgetForm
    list_display = ["tenant", "deployment", "amount", "currency", "thresholds", "action", "active", "updated_at"]
    list_filter = ["action", "active", "currency"]
    search_fields = ["tenant__name", "deployment__name"]
    readonly_fields = ["tenant", "deployment", "created_by", "created_at", "updated_at"]
    fields = ["tenant", "deployment", "amount", "currency", "thresholds", "action", "active", "created_by",
              "created_at", "updated_at"]
    actions = ["lift_actions"]

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        budget_update(actor=staff_actor(request, obj.tenant), budget=obj,
                      **{name: form.cleaned_data[name] for name in form.changed_data if name in BudgetForm.Meta.fields})

    def delete_model(self, request, obj):
        budget_delete(actor=staff_actor(request, obj.tenant), budget=obj)

    def delete_queryset(self, request, queryset):
        for budget in queryset:
            self.delete_model(request, budget)

    @admin.action(description="Lift the action in force")
    def lift_actions(self, request, queryset):
        lifted = 0
        for budget in queryset.select_related("tenant", "deployment"):
            try:
                budget_lift(actor=staff_actor(request, budget.tenant), budget=budget, reason="Lifted by staff.")
            except ServiceError:
                continue  # nothing in force
            lifted += 1
        messages.info(request, f"Lifted the action of {lifted} budget{'s' if lifted != 1 else ''}.")


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyAdmin):
    list_display = ["reached_at", "tenant", "budget", "period", "threshold", "spend", "forecast", "amount", "currency"]
    list_filter = ["threshold", "period"]
    search_fields = ["tenant__name"]


@admin.register(BudgetAction)
class BudgetActionAdmin(ReadOnlyAdmin):
    list_display = ["applied_at", "tenant", "budget", "period", "action", "spend", "amount", "lifted_at", "lifted_by"]
    list_filter = ["action", "period"]
    search_fields = ["tenant__name"]
