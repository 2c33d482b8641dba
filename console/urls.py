from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from billing.urls import api_urlpatterns as billing_api
from billing.urls import urlpatterns as billing_pages
from console import ops, views
from scheduler.urls import api_urlpatterns as scheduler_api
from scheduler.urls import urlpatterns as scheduler_pages
from tenants.urls import api_urlpatterns as tenant_api
from tenants.urls import urlpatterns as tenant_pages

api_v1 = [
    *tenant_api,
    *scheduler_api,
    *billing_api,
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
]

urlpatterns = [
    path("", views.home, name="console-home"),
    path("", include(tenant_pages)),
    path("", include(scheduler_pages)),
    path("", include(billing_pages)),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
]

handler400 = "tenants.problems.api_aware_400"
handler403 = "tenants.problems.api_aware_403"
handler404 = "tenants.problems.api_aware_404"
handler500 = "tenants.problems.api_aware_500"
