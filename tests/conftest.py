pytest_plugins = ["tests.services.fixtures", "tests.fixtures.campaign_fixtures"]
