"""Forms of the billing console pages: usage, budgets, the billing profile."""

from datetime import UTC, date, datetime, timedelta

from django import forms
from django.utils import timezone

from billing.money import quantum
from billing.profiles import ADDRESS_MAX_LENGTH, EMAIL_MAX_LENGTH, LEGAL_NAME_MAX_LENGTH, VAT_ID_MAX_LENGTH
from tenants.forms import country_choices_with_blank

# The API's limit (billing.api.USAGE_MAX_SPAN), in whole days as the form counts them.
MAX_DAYS = 400


def this_month() -> tuple[date, date]:
    today = timezone.now().astimezone(UTC).date()
    return today.replace(day=1), today


class UsageRangeForm(forms.Form):
    """A range of whole UTC days, both ends included; this month so far unless chosen."""

    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To (included)", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, data=None, **kwargs):
        start, end = this_month()
        # Unbound (a first visit) shows this month; a link with one end filled keeps the other default.
        values = {"start": start.isoformat(), "end": end.isoformat()}
        if data is not None:
            values.update({name: data[name] for name in ("start", "end") if data.get(name)})
        super().__init__(values, **kwargs)

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end:
            if end < start:
                self.add_error("end", "Must be on or after the first day.")
            elif (end - start).days + 1 > MAX_DAYS:
                self.add_error("end", f"At most {MAX_DAYS} days at a time.")
        return cleaned

    def range(self) -> tuple[datetime, datetime]:
        """[start, end) in UTC: from the first day's midnight to the midnight after the last day."""
        start = datetime.combine(self.cleaned_data["start"], datetime.min.time(), tzinfo=UTC)
        end = datetime.combine(self.cleaned_data["end"], datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
        return start, end

    def query(self) -> dict[str, str]:
        return {"start": self.cleaned_data["start"].isoformat(), "end": self.cleaned_data["end"].isoformat()}


# --- Budgets ------------------------------------------------------------------------------------
# The form checks the input's shape; billing.budgets checks the rules (currency, amount > 0,
# thresholds) and its refusals are shown on the field they name.


class ThresholdsField(forms.CharField):
    """Percents as a person types them: "50, 80, 100" → [50, 80, 100]."""

    def to_python(self, value):
        text = super().to_python(value)
        parts = [part.strip().rstrip("%").strip() for part in text.replace(";", ",").split(",") if part.strip()]
        try:
            return [int(part) for part in parts]
        except ValueError:
            raise forms.ValidationError("Write whole percents separated by commas, e.g. 50, 80, 100.") from None

    def prepare_value(self, value):
        return ", ".join(map(str, value)) if isinstance(value, list | tuple) else value


class BudgetForm(forms.Form):
    """A new budget (with its scope), or — `for_budget` — an existing one's editable fields."""

    deployment = forms.TypedChoiceField(label="Covers", required=False, empty_value=None,
                                        help_text="One budget for the whole tenant, and one per deployment.")
    amount = forms.DecimalField(label="Monthly amount", max_digits=20, decimal_places=4, min_value=0,
                                help_text="Per calendar month (UTC), before credits and tax.")
    thresholds = ThresholdsField(label="Alert at (percent)", initial="50, 80, 100", max_length=100,
                                 help_text="Each sends one email and one webhook per month. 1–1000, increasing.")
    action = forms.ChoiceField(label="At 100 %", choices=[
        ("notify", "Notify only"),
        ("scale_to_minimum", "Scale down to each deployment's minimum replicas"),
        ("pause", "Pause the deployments"),
    ], initial="notify", widget=forms.RadioSelect)
    active = forms.BooleanField(label="Active", required=False, initial=True,
                                help_text="An inactive budget is not evaluated.")

    def __init__(self, data=None, *, deployments=(), currency: str = "", **kwargs):
        super().__init__(data, **kwargs)
        self.fields["deployment"].choices = [("", "The whole tenant (every deployment)"),
                                             *[(str(d.public_id), d.name) for d in deployments]]
        if currency:
            self.fields["amount"].label = f"Monthly amount ({currency})"

    @classmethod
    def for_budget(cls, budget, data=None) -> "BudgetForm":
        form = cls(data, currency=budget.currency, initial={
            "amount": budget.amount.quantize(quantum(budget.currency)),
            "thresholds": budget.thresholds, "action": budget.action, "active": budget.active})
        del form.fields["deployment"]  # a budget's scope is fixed
        return form


# --- Billing profile ----------------------------------------------------------------------------
# Like the API, the form leaves the rules (country code, VAT id for that country, email, lengths) to
# billing.profiles, so the console and the API give the same messages, shown on the field named.


def _is_true(value) -> bool:
    # The radio posts "True"/"False"; the initial value is the profile's bool.
    return value in (True, "True")


class BillingProfileForm(forms.Form):
    legal_name = forms.CharField(label="Legal name", required=False,
                                 widget=forms.TextInput(attrs={"maxlength": LEGAL_NAME_MAX_LENGTH}),
                                 help_text="As invoices should name you. Empty: your organisation's name.")
    address = forms.CharField(label="Address", required=False,
                              widget=forms.Textarea(attrs={"rows": 4, "maxlength": ADDRESS_MAX_LENGTH}),
                              help_text="Postal address, printed on the invoice.")
    country = forms.ChoiceField(label="Country", choices=country_choices_with_blank, required=False,
                                help_text="Where you are established: it decides the VAT rate.")
    is_business = forms.TypedChoiceField(label="Invoiced as", coerce=_is_true,
                                         choices=[(True, "A business"), (False, "A consumer")],
                                         widget=forms.RadioSelect)
    vat_id = forms.CharField(label="VAT id", required=False,
                             widget=forms.TextInput(attrs={"maxlength": VAT_ID_MAX_LENGTH,
                                                           "placeholder": "DE136695976"}),
                             help_text="With its country prefix. In the EU, a business with a valid VAT id of its "
                                       "country is invoiced without VAT (reverse charge).")
    invoice_email = forms.CharField(label="Invoice email", required=False,
                                    widget=forms.EmailInput(attrs={"maxlength": EMAIL_MAX_LENGTH}),
                                    help_text="Where invoices are sent. Empty: the owners.")

    @classmethod
    def for_profile(cls, details, data=None) -> "BillingProfileForm":
        return cls(data, initial={"legal_name": details.legal_name, "address": details.address,
                                  "country": details.country, "is_business": details.is_business,
                                  "vat_id": details.vat_id, "invoice_email": details.invoice_email})
