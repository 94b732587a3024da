# h3pipe front door: make install | test | lint | demo | wheel | smoke
# Any Python from 3.11 on (PYTHON=/path/to/python3.13 for another than python3).
PYTHON ?= $(shell command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
DEMO_TILES = .h3pipe/demo/cop-dem-glo-30
# The example source reads the real cop-dem-glo-30 on Planetary Computer; the demo points
# the same file at a local static mirror through the environment.
DEMO_ENV = H3PIPE_STAC_API=.h3pipe/demo/stac/collection.json H3PIPE_STAC_SIGNER=none

.PHONY: install test lint wheel smoke assets demo demo-flood demo-fathom bench bench-scale bench-vector bench-sphere bench-house bench-serve serve clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "h3pipe needs Python 3.11 or newer; set PYTHON=/path/to/python3.11 (or newer)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest -q

# ruff over everything Python here; mypy over the package; import-linter's contracts (the
# layers, the CLI only over the API). tests/test_house.py, run by 'make test', refuses
# import loops and unexplained imports inside functions.
lint: install
	$(BIN)/ruff check h3pipe tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# The wheel a user installs (dist/h3pipe-VERSION-py3-none-any.whl), built by pip with
# hatchling in an isolated environment.
wheel: install
	rm -rf dist
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .

# The dashboard's JavaScript from the npm registry, at the versions web/package-lock.json
# pins: npm ci in web/, then each browser build (its source-map comment dropped: the map is
# not shipped) and its licence copied into h3pipe/server/static/vendor/. The copies are
# committed, so a wheel or an install from source needs neither npm nor the internet.
VENDOR = h3pipe/server/static/vendor
assets:
	cd web && npm ci --ignore-scripts --no-audit --no-fund
	mkdir -p $(VENDOR)
	sed '/^\/\/# sourceMappingURL=/d' web/node_modules/h3-js/dist/h3-js.umd.js > $(VENDOR)/h3-js.umd.js
	cp web/node_modules/h3-js/LICENSE $(VENDOR)/h3-js.LICENSE.txt
	cp web/node_modules/h3-js/NOTICE $(VENDOR)/h3-js.NOTICE.txt
	@echo "h3-js $$(node -p "require('./web/node_modules/h3-js/package.json').version") in $(VENDOR)"

# That wheel installed alone (no extra) in a clean venv on the oldest and the newest Python
# found (pyenv's, or python3.N on PATH; SMOKE_PYTHONS='/path/python3.11 /path/python3.13'
# to choose), then --version, validate, a run on the embedded store and the one-line error
# of each missing extra (tests/test_install.py; a few minutes, most of it pip).
smoke: wheel
	H3PIPE_WHEEL="$$(ls dist/h3pipe-*.whl)" H3PIPE_SMOKE_PYTHONS="$(SMOKE_PYTHONS)" \
		$(BIN)/python -m pytest -q -s -m wheel tests/test_install.py

# Generates a local stand-in for cop-dem-glo-30 over Rwanda (6 tiles, ~215 MB, once, and
# a static STAC collection of them), then runs the main job on the embedded store with the
# example source pointed at that mirror, and shows what it produced; ends with a map of the
# mean elevation, a map of the share of flooded buildings and the HTML report of the last run.
demo: install
	$(BIN)/python -m h3pipe.demo --out $(DEMO_TILES) --stac-catalog .h3pipe/demo/stac
	$(DEMO_ENV) $(BIN)/h3pipe validate
	$(DEMO_ENV) $(BIN)/h3pipe run elevation_terrain --iso3 RWA
	$(BIN)/h3pipe export elevation_copdem30 --iso3 RWA --resolution 6 -o .h3pipe/demo/elevation_copdem30_RWA_6.csv
	$(BIN)/h3pipe export elevation_copdem30 --iso3 RWA --resolution 6 -o .h3pipe/demo/elevation_copdem30_RWA_6.geoparquet
	$(BIN)/h3pipe export elevation_copdem30 --iso3 RWA --resolution 6 -o .h3pipe/demo/elevation_copdem30_RWA_6.gpkg
	$(BIN)/h3pipe runs show latest
	$(BIN)/h3pipe map elevation_copdem30 mean --iso3 RWA --resolution 6 -o .h3pipe/demo/elevation_copdem30_RWA_6_mean.png
	@echo "first rows of .h3pipe/demo/elevation_copdem30_RWA_6.csv:"
	@head -n 6 .h3pipe/demo/elevation_copdem30_RWA_6.csv
	$(MAKE) --no-print-directory demo-flood
	$(BIN)/h3pipe runs report latest -o .h3pipe/demo/report.html
	@echo "pictures of the demo:"
	@echo "  Rwanda's mean elevation:          .h3pipe/demo/elevation_copdem30_RWA_6_mean.png"
	@echo "  share of buildings flooded:       .h3pipe/demo/building_flood_exposure_RWA_7_share_flooded.png"
	@echo "  report of the last run (HTML):    .h3pipe/demo/report.html"

# The multi-step examples on stand-in flood depth, population and 150,000 building
# footprints for Rwanda (~30 MB, once): buildings -> depth -> people nearby -> per cell;
# and people per cell at resolutions 5 to 7, each run checking that no person is lost.
# The demo project over HTTP (after make demo): the API, OGC API - Processes and the live
# dashboard on http://127.0.0.1:8000/dashboard, with the example source on the local mirror.
serve: install
	$(DEMO_ENV) $(BIN)/h3pipe serve --port $(or $(PORT),8000)

demo-flood: install
	$(BIN)/python -m h3pipe.demo.flood --out .h3pipe/demo/flood
	$(BIN)/h3pipe run population --iso3 RWA --resolution 5-7
	$(BIN)/h3pipe runs show latest
	$(BIN)/h3pipe run building_flood_exposure --iso3 RWA
	$(BIN)/h3pipe run flood_risk_weighted --iso3 RWA
	$(BIN)/h3pipe export building_flood_exposure --iso3 RWA --resolution 7 -o .h3pipe/demo/building_flood_exposure_RWA_7.csv
	$(BIN)/h3pipe map building_flood_exposure share_flooded --iso3 RWA --resolution 7 -o .h3pipe/demo/building_flood_exposure_RWA_7_share_flooded.png
	@echo "first rows of .h3pipe/demo/building_flood_exposure_RWA_7.csv:"
	@head -n 6 .h3pipe/demo/building_flood_exposure_RWA_7.csv
	$(MAKE) --no-print-directory demo-fathom

# The scenario sweep: a FATHOM-like stand-in (39 scenarios x 8 return periods on Rwanda's 6
# tiles, ~4 MB, seconds) and building flood exposure for all of them in one run, on the
# buildings of demo-flood; then one scenario and return period exported.
demo-fathom: install
	$(BIN)/python -m h3pipe.demo.flood --out .h3pipe/demo/flood
	$(BIN)/python -m h3pipe.demo.fathom --out .h3pipe/demo/fathom
	$(BIN)/h3pipe run building_flood_exposure_fathom --iso3 RWA
	$(BIN)/h3pipe export building_flood_exposure_fathom --iso3 RWA --resolution 7 --where flood_type=fluvial_undefended --where year=2050 --where ssp=ssp245 --where return_period=rp100 -o .h3pipe/demo/fathom_fluvial_undefended_2050_ssp245_rp100_RWA_7.csv
	@echo "first rows of .h3pipe/demo/fathom_fluvial_undefended_2050_ssp245_rp100_RWA_7.csv:"
	@head -n 6 .h3pipe/demo/fathom_fluvial_undefended_2050_ssp245_rp100_RWA_7.csv

# h3pipe against exactextract, rasterize+bincount, rasterstats and the read floor on a
# Rwanda-sized DEM (generated once into benchmarks/data); writes benchmarks/results/ and
# the table in README.md. Then the same tiles over HTTP with 50 ms per request and a
# 100 MB/s cap (remote.json), the PostgreSQL store against the embedded one at res 9
# (store.json, needs PostgreSQL at 127.0.0.1:5432), small runs (small.json) and the queue
# backend against the local pool, per task and scaled out to 8 worker processes over HTTP
# (queue.json, needs RabbitMQ at 127.0.0.1:5672 too; about 7 minutes), and a 39-scenario x
# 8-band sweep as one run against 39 and 312 separate runs (sweep.json; about 45 minutes,
# BENCH_SWEEP='--single-band 39' runs an eighth of the 312 and scales), and h3pipe map
# drawing 8 k to 20 M cells (maps.json, under a minute). About 80 minutes on 2 cores;
# then the vector pipelines on 1 to 64 M buildings (vector.json; see bench-vector).
# pyramid.py: -r 5-9 in one run against -r 9 alone, locally and over HTTP (pyramid.md).
# memory.py: h3pipe plan's peak memory against the peak measured, Rwanda's DEM at res 6-9
# and the sweep at res 6-7, each planned before it runs (memory.md, about 5 minutes).
# h3pipe as it was before issue 29, run beside this tree in bench.py (BENCH_BEFORE= skips it).
BENCH_BEFORE ?= 18ccdb3
bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench.py --before=$(BENCH_BEFORE) $(BENCH_ARGS)
	$(BIN)/python benchmarks/remote.py
	$(BIN)/python benchmarks/pyramid.py
	$(BIN)/python benchmarks/store.py
	$(BIN)/python benchmarks/small.py
	$(BIN)/python benchmarks/queue_backend.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/sweep.py $(BENCH_SWEEP)
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/maps.py
	$(BIN)/python benchmarks/vector.py $(VECTOR_ARGS)
	$(BIN)/python benchmarks/targets.py

# The scale targets of issue 12: h3pipe run over DR Congo at res 8 and 9 and Rwanda at res 9
# on stand-ins for cop-dem-glo-90 (241 tiles of 1200 x 1200, ~1 GB, generated once into
# benchmarks/data/scale in ~2 minutes), the cell listing alone, h3pipe plan over Africa at
# res 8, and a 2,000-cell sample of each run checked against exactextract; writes
# benchmarks/results/scale.json and scale.md. A process tree past 6 GB or 40 minutes is
# killed and its target reported missed. On 2 cores: an estimated 20 minutes once the
# scope's cells stream (the DR Congo res 9 run alone, 20 M cells, about 10); with cells
# listed as strings, as on 72c0a76, up to an hour, most of it the res 9 run and listing.
# SCALE_ARGS=--quick: resolution 7 only, about 2 minutes; SCALE_ARGS='--res 8' skips res 9.
bench-scale: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/scale.py $(SCALE_ARGS)

# Scopes on the sphere (issue 25): the world's cells listed at res 6 and 8, countries
# across the antimeridian and round a pole, and a world run at res 4 checked cell by cell
# against exactextract (benchmarks/results/sphere.md).
bench-sphere: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/sphere.py

# Before and after a restructure (issue 27), side by side: two trees of h3pipe (HOUSE_BEFORE,
# default 5de584b, the last commit before issue 27; HOUSE_AFTER, default HEAD; a revision is
# checked out as a detached worktree outside the repository, or give a folder), each run
# through the CLI with this venv's Python and PYTHONPATH at its tree, alternately, on the
# Rwanda tiles of bench.py: start-up (--help, --version, validate, runs list), a 36-cell
# run, Rwanda at res 6 to 9, and what the light commands import; then both sides' res 8
# results compared bit for bit; a rank test says which rows differ. Waits for a quiet
# machine (1-minute load at most 1.5, others under half a core) and runs again rows that
# other processes disturbed; writes benchmarks/results/house.json and house.md. About 10
# minutes on a quiet 2-core machine, longer while others keep it busy (HOUSE_ARGS=--help).
HOUSE_BEFORE ?= 5de584b
HOUSE_AFTER  ?= HEAD
# h3pipe serve under load (issue 28): a 36-cell run submitted over HTTP to warm workers
# (target <= 0.3 s to 'successful'), 100 clients polling job status and map cells while two
# runs execute (target p99 <= 100 ms for status, no errors), and those runs' downloads
# against the same CLI runs (benchmarks/results/serve.md).
bench-serve: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/serve.py $(SERVE_ARGS)

bench-house: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/house.py --before $(HOUSE_BEFORE) --after $(HOUSE_AFTER) $(HOUSE_ARGS)

# The vector targets of issue 24: building_flood_exposure and flood_risk_weighted over
# Rwanda on 1, 4, 16 and 64 M stand-in footprints placed where people live (GeoParquet 1.1,
# bbox covering, Hilbert-sorted row groups; generated once into benchmarks/data/vector,
# ~4.5 GB in all, the 64 M file in about 75 s), plan, the two runs and two streaming scripts
# a user might write instead, each with wall, CPU and peak RSS of its process tree, and at
# 1 M both results checked against an independent recomputation; writes
# benchmarks/results/vector.json and vector.md. A command past 8 GB or 40 minutes is killed
# and its target reported missed. VECTOR_ARGS=--quick: 1 M only, about 3 minutes;
# VECTOR_ARGS='--sizes 1M,4M'; VECTOR_ARGS=--queue adds the 16 M run on two h3pipe workers
# (RabbitMQ and PostgreSQL at 127.0.0.1).
bench-vector: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/vector.py $(VECTOR_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
