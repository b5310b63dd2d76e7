"""The Pi's Grafana dashboards as code: `generate` writes the provisioning files committed beside it."""
