from django.urls import path

from scheduler import api, views

api_urlpatterns = [
    path("hardware-tiers", api.HardwareTierListView.as_view(), name="api-hardware-tiers"),
    path("model-templates", api.ModelTemplateListView.as_view(), name="api-model-templates"),
    path("models", api.ModelListView.as_view(), name="api-models"),
    path("models/<str:model_id>", api.ModelDetailView.as_view(), name="api-model"),
    path("estimates", api.EstimateView.as_view(), name="api-estimates"),
]

# Console pages.
urlpatterns = [
    path("models/", views.model_list, name="models"),
    path("models/new/", views.model_create, name="model-create"),
    path("models/<str:model_id>/", views.model_detail, name="model-detail"),
    path("models/<str:model_id>/estimate-chart.json", views.model_estimate_chart, name="model-estimate-chart"),
    path("models/<str:model_id>/edit/", views.model_edit, name="model-edit"),
    path("models/<str:model_id>/delete/", views.model_delete, name="model-delete"),
]
