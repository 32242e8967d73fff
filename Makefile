# Convenience targets; each is one of the scripts in script/ or packaging/.
SENTRY_VERSION ?= $(shell cat packaging/pins/DEFAULT)
RELEASE ?= $(shell . /etc/os-release && echo $$VERSION_CODENAME)

.PHONY: deploy test test-fast test-unit lint readme deb debs spm pins lock clean bench bench-upgrade bench-fleet bench-health bench-project-list bench-backup bench-front bench-storm bench-flood

deploy:          ## deploy sentry on this machine (masterless)
	script/deploy

test:            ## the whole suite, as CI runs it
	script/test

test-fast:       ## skip the slow end-to-end tests
	script/test -m 'not slow'

test-unit:       ## the unit tier alone: Salt's loader mocks, no root, no hosts, seconds
	.venv/bin/pytest -q test/unit

lint:
	script/lint

readme:          ## docs/pillar.md's pillar table from sentry/defaults.yaml
	.venv/bin/python script/pillar_table.py

deb:             ## make deb SENTRY_VERSION=6.14.0 RELEASE=trixie (default: this machine's Debian release)
	packaging/build-deb $(SENTRY_VERSION) $(RELEASE)

debs:            ## every pinned version for every Debian release (packaging/pins/<release>/<version>.txt)
	for pins in packaging/pins/*/*.txt; do \
		packaging/build-deb $$(basename $$pins .txt) $$(basename $$(dirname $$pins)) || exit 1; done

spm:             ## the formula as an SPM package, build/spm/sentry-<version>-<release>.spm (script/build-spm)
	script/build-spm

pins:            ## make pins SERVER=6.20.3 WEB=5.1.1 CLIENT=7.3.0 RELEASE=trixie
	packaging/freeze-pins $(SERVER) $(WEB) $(CLIENT) $(RELEASE)

lock:            ## re-resolve requirements-dev.lock from requirements-dev.txt
	script/freeze-lock

clean:
	rm -rf build

bench:           ## benchmarks: ratios measured in one run, printed, never asserted
	script/bootstrap test
	.venv/bin/python test/bench/bench_reapply.py
	.venv/bin/python test/bench/bench_mirror.py
	.venv/bin/pytest -p no:cacheprovider -s test/bench/bench_fleet.py
	.venv/bin/python test/bench/bench_front.py
	.venv/bin/python test/bench/bench_storm.py
	.venv/bin/python test/bench/bench_flood.py

bench-front:     ## pages and a release file under 20 clients: nginx, front, devpi's nginx profile, bare server (~5 min)
	script/bootstrap test && .venv/bin/python test/bench/bench_front.py

bench-storm:     ## 30 pip installs at once of 20 packages through the front (master, 2 replicas) vs one alone (~10 min)
	script/bootstrap test && .venv/bin/python test/bench/bench_storm.py

bench-flood:     ## a login flood against reads (devpi bare, devpi's nginx, node, front); lockdown's password checks (~10 min)
	script/bootstrap test && .venv/bin/python test/bench/bench_flood.py

bench-upgrade:   ## write window in place and by export, 1,000 and 10,000 files; growth; export / bare (~40 min first)
	script/bootstrap test && .venv/bin/python test/bench/bench_upgrade.py

bench-fleet:     ## state.apply sentry from one master: ten hosts against one, the master's peak memory (~6 min)
	script/bootstrap test && .venv/bin/pytest -p no:cacheprovider -s test/bench/bench_fleet.py

bench-health:    ## the health check's share of a 1,000-file master upgrade, 6.14 -> 6.20 (goal <= 10 %; ~2 min)
	script/bootstrap test && .venv/bin/python test/bench/bench_health.py

bench-backup:    ## a backup of 1,000 release files: seconds, write pause (live and stopped), drill / backup (~5 min)
	script/bootstrap test && .venv/bin/python test/bench/bench_backup.py

bench-project-list:  ## root/pypi against 100,000 upstream projects, no_project_list false and true (~12 min)
	script/bootstrap test && .venv/bin/python test/bench/bench_project_list.py
