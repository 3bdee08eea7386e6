pytest_plugins = ["tests.services.fixtures", "tests.fixtures.campaign_fixtures", "tests.fixtures.hub_fixtures"]
