# The two set-up commands (README): `make tiny` and `make test`. Both create .venv on first use.
.PHONY: setup tiny test clean

setup:
	scripts/ci/setup.sh

# Set up, then run the built-in tiny campaign end to end on this machine's CPU.
tiny: setup
	.venv/bin/golfrun run-all
	@echo "golfrun is in .venv/bin: 'source .venv/bin/activate' for a bare 'golfrun status', or run .venv/bin/golfrun status"

# Set up, install the services the integration tests start (Slurm, sshd), then run every test.
test: setup
	@if [ -x scripts/ci/install-services.sh ]; then scripts/ci/install-services.sh; fi
	.venv/bin/pytest

clean:
	rm -rf runs .pytest_cache
