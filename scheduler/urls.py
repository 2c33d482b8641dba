from django.urls import path

from scheduler import api, views

api_urlpatterns = [
    path("hardware-tiers", api.HardwareTierListView.as_view(), name="api-hardware-tiers"),
    path("model-templates", api.ModelTemplateListView.as_view(), name="api-model-templates"),
    path("models", api.ModelListView.as_view(), name="api-models"),
    path("models/<str:model_id>", api.ModelDetailView.as_view(), name="api-model"),
    path("estimates", api.EstimateView.as_view(), name="api-estimates"),
    path("regions", api.RegionListView.as_view(), name="api-regions"),
    path("deployments", api.DeploymentListView.as_view(), name="api-deployments"),
    path("deployments/<str:deployment_id>", api.DeploymentDetailView.as_view(), name="api-deployment"),
    path("deployments/<str:deployment_id>/pause", api.DeploymentPauseView.as_view(), name="api-deployment-pause"),
    path("deployments/<str:deployment_id>/resume", api.DeploymentResumeView.as_view(),
         name="api-deployment-resume"),
    path("deployments/<str:deployment_id>/events", api.DeploymentEventListView.as_view(),
         name="api-deployment-events"),
    path("deployments/<str:deployment_id>/replicas", api.DeploymentReplicaListView.as_view(),
         name="api-deployment-replicas"),
    # The operator's routes: OperatorAPIView, never a tenant key.
    path("fleet/nodes", api.FleetNodeListView.as_view(), name="api-fleet-nodes"),
    path("fleet/nodes/<str:node_name>", api.FleetNodeDetailView.as_view(), name="api-fleet-node"),
    path("fleet/nodes/<str:node_name>/cordon", api.NodeCordonView.as_view(), name="api-fleet-node-cordon"),
    path("fleet/nodes/<str:node_name>/uncordon", api.NodeUncordonView.as_view(), name="api-fleet-node-uncordon"),
    path("fleet/nodes/<str:node_name>/drain", api.NodeDrainView.as_view(), name="api-fleet-node-drain"),
    path("fleet/nodes/<str:node_name>/mark-down", api.NodeMarkDownView.as_view(), name="api-fleet-node-mark-down"),
    path("fleet/regions", api.FleetRegionListView.as_view(), name="api-fleet-regions"),
    path("fleet/tenants/<str:tenant_id>/quotas", api.FleetTenantQuotasView.as_view(),
         name="api-fleet-tenant-quotas"),
    path("fleet/tenants/<str:tenant_id>/limits", api.FleetTenantLimitsView.as_view(),
         name="api-fleet-tenant-limits"),
    path("fleet/events", api.FleetEventListView.as_view(), name="api-fleet-events"),
]

# Console pages.
urlpatterns = [
    path("models/", views.model_list, name="models"),
    path("models/new/", views.model_create, name="model-create"),
    path("models/<str:model_id>/", views.model_detail, name="model-detail"),
    path("models/<str:model_id>/estimate-chart.json", views.model_estimate_chart, name="model-estimate-chart"),
    path("models/<str:model_id>/edit/", views.model_edit, name="model-edit"),
    path("models/<str:model_id>/delete/", views.model_delete, name="model-delete"),
    path("deployments/", views.deployment_list, name="deployments"),
    path("deployments/new/", views.deployment_create, name="deployment-create"),
    path("deployments/<str:deployment_id>/", views.deployment_detail, name="deployment-detail"),
    path("deployments/<str:deployment_id>/replicas.html", views.deployment_live, name="deployment-live"),
    path("deployments/<str:deployment_id>/edit/", views.deployment_edit, name="deployment-edit"),
    path("deployments/<str:deployment_id>/pause/", views.deployment_pause, name="deployment-pause"),
    path("deployments/<str:deployment_id>/resume/", views.deployment_resume, name="deployment-resume"),
    path("deployments/<str:deployment_id>/delete/", views.deployment_delete, name="deployment-delete"),
]
