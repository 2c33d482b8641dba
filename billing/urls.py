from django.urls import path

from billing import api, ingest_api, views

api_urlpatterns = [
    # The fleet reports usage here (service tokens with usage:write; tenant keys are refused).
    path("usage/events", ingest_api.UsageEventIngestView.as_view(), name="api-usage-events"),
    # Tenants read meters, usage and a deployment's metrics (read scope; from rollups only).
    path("meters", api.MeterListView.as_view(), name="api-meters"),
    path("usage", api.UsageView.as_view(), name="api-usage"),
    path("deployments/<str:deployment_id>/metrics", api.DeploymentMetricsView.as_view(),
         name="api-deployment-metrics"),
    # Money (billing scope, read-only): prices, credits, invoices and why each amount is what it is.
    path("prices", api.PriceListView.as_view(), name="api-prices"),
    path("credits", api.CreditsView.as_view(), name="api-credits"),
    path("invoices", api.InvoiceListView.as_view(), name="api-invoices"),
    path("invoices/<str:invoice_id>", api.InvoiceDetailView.as_view(), name="api-invoice"),
    path("invoices/<str:invoice_id>/pdf", api.InvoicePdfView.as_view(), name="api-invoice-pdf"),
    path("invoices/<str:invoice_id>/rollups", api.InvoiceRollupListView.as_view(), name="api-invoice-rollups"),
    path("invoices/<str:invoice_id>/events", api.InvoiceEventListView.as_view(), name="api-invoice-events"),
    # Budgets (billing scope): a monthly limit, alerts at thresholds, an action at 100 % and its lift.
    path("budgets", api.BudgetListView.as_view(), name="api-budgets"),
    path("budgets/<str:budget_id>", api.BudgetDetailView.as_view(), name="api-budget"),
    path("budgets/<str:budget_id>/lift", api.BudgetLiftView.as_view(), name="api-budget-lift"),
    # The billing profile (billing scope): who invoices are addressed to and what decides their tax.
    path("billing/profile", api.BillingProfileView.as_view(), name="api-billing-profile"),
]

# Console pages.
urlpatterns = [
    path("usage/", views.usage, name="usage"),
    path("usage/chart.json", views.usage_chart, name="usage-chart"),
    path("deployments/<str:deployment_id>/latency-chart.json", views.deployment_latency_chart,
         name="deployment-latency-chart"),
    # Money: invoices (with the printable page, PDF and CSV), a line's drill-down, credits, prices.
    path("billing/invoices/", views.invoice_list, name="invoices"),
    path("billing/invoices/<str:invoice_id>/", views.invoice_detail, name="invoice-detail"),
    path("billing/invoices/<str:invoice_id>/print/", views.invoice_print, name="invoice-print"),
    path("billing/invoices/<str:invoice_id>/pdf/", views.invoice_pdf, name="invoice-pdf"),
    path("billing/invoices/<str:invoice_id>/lines.csv", views.invoice_csv, name="invoice-csv"),
    path("billing/invoices/<str:invoice_id>/lines/<str:line_id>/", views.invoice_line, name="invoice-line"),
    path("billing/credits/", views.credits, name="credits"),
    path("billing/prices/", views.prices, name="prices"),
    # Budgets: the list with spend bars, the create form, a budget's edit page, lift and delete.
    path("billing/budgets/", views.budget_list, name="budgets"),
    path("billing/budgets/<str:budget_id>/", views.budget_detail, name="budget-detail"),
    path("billing/budgets/<str:budget_id>/lift/", views.budget_lift, name="budget-lift"),
    path("billing/budgets/<str:budget_id>/delete/", views.budget_delete, name="budget-delete"),
    # The billing profile: legal name, address, country, VAT id — the invoice's addressee and its tax.
    path("billing/profile/", views.billing_profile, name="billing-profile"),
]
