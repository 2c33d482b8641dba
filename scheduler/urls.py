from django.urls import path

from scheduler import api

api_urlpatterns = [
    path("hardware-tiers", api.HardwareTierListView.as_view(), name="api-hardware-tiers"),
    path("model-templates", api.ModelTemplateListView.as_view(), name="api-model-templates"),
    path("models", api.ModelListView.as_view(), name="api-models"),
    path("models/<str:model_id>", api.ModelDetailView.as_view(), name="api-model"),
    path("estimates", api.EstimateView.as_view(), name="api-estimates"),
]
