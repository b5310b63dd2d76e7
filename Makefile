# Home-energy edge + server. `make demo` runs the main job, `make test` the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
APT_PACKAGES := mosquitto mosquitto-clients influxdb influxdb-client chromium chromium-driver docker-compose debootstrap nftables iproute2 fuse3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help system-deps venv venv-ansible venv-tflite venv-hass test lint demo bench-ingest bench-edge bench-train bench-server bench-flow bench-faults bench-fleet bench-restore bench-retention bench-wear bench-powercut eval-seed eval-rolling eval-holidays eval-heatpump day-ahead-bound test-ansible test-pi clean

help:
	@echo "make demo          replay the real year, train, push, forecast (see README)"
	@echo "make test          install what is needed and run the whole test suite"
	@echo "make venv          .venv with every component's dependencies"
	@echo "make venv-hass     .venv-hass: Home Assistant, for the MQTT discovery checks (needs Python >= 3.13)"
	@echo "make lint          ruff"
	@echo "make bench-ingest | bench-edge | bench-train | bench-server | bench-flow | bench-faults | bench-fleet   benchmarks (print JSON)"
	@echo "make bench-restore | bench-retention   backup/restore proven on fresh instances; a year of retention"
	@echo "make bench-wear | bench-powercut   disk writes per day of two houses; power cuts at random moments"
	@echo "make eval-seed     train on the seed split, backtest, print the README accuracy table"
	@echo "make eval-rolling  train before each month 2022-11..2023-08 (3 seeds), backtest, score; the guard replayed"
	@echo "make eval-holidays train before May 2023 without and with public holidays, score holiday days apart"
	@echo "make eval-heatpump a heat pump's heating months with and without the outdoor temperature (noisy forecast)"
	@echo "make day-ahead-bound  what a linear blend of the day-ahead inputs reaches per month (walk-forward, hindsight)"
	@echo "make test-ansible  provision a debootstrapped Debian root with ansible/site.yml"
	@echo "make test-pi       the edge in Debian arm64 roots under qemu (bookworm, trixie): install, forecast, ingest"

# System packages (Debian/Ubuntu). Installed only when a binary is missing.
system-deps:
	@missing=0; for b in mosquitto influxd chromium chromedriver docker-compose debootstrap nft ip fusermount3; do \
	  command -v $$b >/dev/null 2>&1 || [ -x /usr/sbin/$$b ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  echo "Installing system packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

$(VENV)/.installed: pyproject.toml requirements/edge.txt requirements/training.txt requirements/server.txt requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements/dev.txt
	touch $@

venv: $(VENV)/.installed

test: system-deps venv venv-tflite venv-ansible venv-hass
	$(PY) -m pytest tests

lint: venv
	$(VENV)/bin/ruff check .

demo: system-deps venv
	$(PY) -m tools.demo $(ARGS)

# The agent vs a bare paho QoS 1 subscriber on the same broker and publisher (target: ratio_vs_bare >= 0.85, lost 0).
# ARGS: --rounds N, --messages N, --naive-messages N (0: skip), --profile FILE (py-spy: pip install py-spy).
bench-ingest: venv system-deps
	$(PY) -m tools.benchmarks.bench_ingest $(ARGS)

bench-edge: venv system-deps
	$(PY) -m tools.benchmarks.bench_edge $(if $(BUNDLES),--bundles $(BUNDLES))

bench-train: venv
	$(PY) -m tools.benchmarks.bench_train

eval-seed: venv
	$(PY) -m tools.benchmarks.eval_seed_split $(ARGS)

# Every month 2022-11 … 2023-08 × 3 seeds: 30 trainings of the four bundles, 12-27 min each on this busy 2-core
# machine (5-10 h); resumable: ARGS e.g. --seeds 42 --resume, or --months 2023-07 --seeds 42 7 123
eval-rolling: venv
	nice -n 15 $(PY) -m tools.benchmarks.eval_rolling $(ARGS)

eval-holidays: venv
	nice -n 10 $(PY) -m tools.benchmarks.eval_holidays $(ARGS)

# ~10-20 min per heating month on a busy 2-core machine (two cnn-96 trainings); ARGS e.g. --start 2021-10 --end 2022-05 --resume
eval-heatpump: venv
	nice -n 15 $(PY) -m tools.benchmarks.eval_heatpump $(ARGS)

day-ahead-bound: venv
	$(PY) -m tools.benchmarks.day_ahead_bound $(ARGS)

bench-server: venv
	$(PY) -m tools.benchmarks.bench_server

# Faults under a 200 msg/s stream (influxd down 30 s, broker restart, 3 x SIGKILL, full disk), counted exactly.
bench-faults: venv system-deps
	$(PY) -m tools.benchmarks.bench_faults $(ARGS)

# Back up a live agent and server, restore both into fresh instances, compare every series, the models, the registry
# and the key (docs/deployment.md "Backup and restore"). ARGS: --readings N.
bench-restore: venv system-deps
	$(PY) -m tools.benchmarks.bench_restore $(ARGS)

# A year of the 20-device house replayed fast into influxd with the agent's retention on: database size, RSS,
# compaction errors after a year (docs/pi.md "Retention"). ARGS: --days N, --full-rate-days N.
bench-retention: venv system-deps
	nice -n 10 $(PY) -m tools.benchmarks.bench_retention $(ARGS)

# Power cuts at random moments (a FUSE filesystem forgets what was not synced): >= 200 cycles, JSON
# {"cycles", "acked_lost", "unreadable", "duplicates"} (target 0, 0, 0). ARGS: --cycles N --seed S.
bench-powercut: venv system-deps
	$(PY) -m tools.benchmarks.bench_powercut $(ARGS)

# Disk writes per day of a 6-device (every 10 s) and a 20-device (every 1 s) house on a loop-mounted ext4 image,
# accelerated (needs root for the loop mount). ARGS: --hours H --speed K --houses 6x10s.
bench-wear: venv system-deps
	nice -n 10 $(PY) -m tools.benchmarks.bench_wear $(ARGS)

# The flow and forecasts in real time at 200 msg/s, for two slot boundaries on the real clock (15-30 minutes).
bench-flow: venv system-deps
	$(PY) -m tools.benchmarks.bench_flow $(ARGS)

$(VENV)-ansible/.installed: requirements/ansible.txt
	$(PYTHON) -m venv $(VENV)-ansible
	$(VENV)-ansible/bin/pip install -q -r requirements/ansible.txt
	touch $@

venv-ansible: $(VENV)-ansible/.installed

# Optional: tflite-runtime 2.14 (numpy<2, Python 3.11) in its own venv, so training records whether bundles load there.
$(VENV)-tflite/.installed:
	$(PYTHON) -m venv $(VENV)-tflite
	$(VENV)-tflite/bin/pip install -q "tflite-runtime==2.14.0" "numpy<2"
	touch $@

venv-tflite: $(VENV)-tflite/.installed

# Test-only: Home Assistant judges the MQTT discovery payloads (tests/edge_agent/publish/test_hass.py). It needs
# Python >= 3.13: HASS_PYTHON, else python3.14/python3.13 on PATH, else pyenv's newest 3.13+. Without one this says so and the test
# skips. Measured: 1 min 40 s and 630 MB from an empty pip cache (all wheels, nothing compiles).
HASS_PYTHON ?=
$(VENV)-hass/.installed: requirements/hass.txt
	@py=""; for p in $(HASS_PYTHON) python3.14 python3.13 \
	  $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[3-9]*/bin/python3 2>/dev/null | sort -Vr); do \
	  "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 13))' >/dev/null 2>&1 && { py=$$p; break; }; done; \
	if [ -z "$$py" ]; then \
	  echo "venv-hass: no Python >= 3.13 (set HASS_PYTHON=/path/to/python3.13): the Home Assistant checks will skip"; \
	else \
	  echo "venv-hass: Home Assistant with $$py" && rm -rf $(VENV)-hass && "$$py" -m venv $(VENV)-hass && \
	  $(VENV)-hass/bin/pip install -q --ignore-requires-python -r requirements/hass.txt && touch $@; \
	fi

venv-hass: $(VENV)-hass/.installed

# Lint, the role pieces a chroot cannot run (units verified, InfluxDB setup against a real influxd, the package's
# wheel and its install and upgrade), the chroot run.
test-ansible: system-deps venv venv-ansible
	$(VENV)-ansible/bin/ansible-lint ansible/site.yml
	$(PY) -m pytest -q tests/deploy/test_units.py tests/deploy/test_influxdb_setup.py tests/deploy/test_package.py
	$(PY) tests/deploy/chroot_provision.py

# The edge in Debian arm64 roots (bookworm: Raspberry Pi OS's base, Python 3.11; trixie: Python 3.13) under
# qemu-user, as root (docs/pi.md). Not part of `make test`: cold (roots built, build/*.tar) ≈ 15-20 min, cached ≈ 8 min
# on this 2-core machine. The JSON with wheel versions and emulated timings is printed (-s).
PI_APT := debootstrap qemu-user-static binfmt-support
test-pi: system-deps venv
	@for b in debootstrap qemu-aarch64-static update-binfmts; do \
	  command -v $$b >/dev/null 2>&1 || [ -x /usr/sbin/$$b ] || { \
	  echo "Installing $(PI_APT)"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(PI_APT); break; }; done
	HOME_ENERGY_TEST_PI=1 $(PY) -m pytest -q -s tests/pi

clean:
	rm -rf $(VENV) .pytest_cache build artefacts

# N = 1, 2, 4, 8 synthetic houses trained (quick) on 1 and 2 Ray nodes on loopback; overview p95; JSON (docs/fleet.md).
bench-fleet: venv system-deps
	$(PY) -m tools.benchmarks.bench_fleet $(ARGS)
