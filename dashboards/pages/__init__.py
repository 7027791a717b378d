"""The pages of the dashboards: overview, commune, device (registered by ``dashboards.app``)."""
