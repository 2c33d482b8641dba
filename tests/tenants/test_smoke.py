def test_tenant_endpoint_answers_the_keys_tenant(tenant_a):
    response = tenant_a.api.get("/api/v1/tenant")
    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(tenant_a.tenant.public_id)
