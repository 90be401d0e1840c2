# mamori: the four commands. `make setup` is idempotent and installs what is missing.
SHELL := /bin/bash
GUEST_DIR ?= $(CURDIR)/.cache/guest
DEB_PACKAGES := qemu-system-x86 qemu-system-common qemu-utils busybox-static cpio e2fsprogs iproute2 ovmf fdisk kmod xz-utils gcc libc6-dev util-linux openssl rsync genisoimage dosfstools mtools cryptsetup-bin ntfs-3g systemd-boot-efi binutils wimtools libhivex-bin libwin-hivex-perl lvm2 zfs-fuse openssh-server chromium postgresql

.PHONY: setup deps npm build api-types guest demo test lint format screenshots bench bench-deps clean

setup: deps npm build guest

# Debian packages: install only what is missing (apt-get update once, when needed). postgresql:
# serve --db and the store tests on PostgreSQL (test/harness/pg-cluster.ts makes throwaway clusters).
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

npm:
	@# A node_modules that is a symlink belongs to another checkout (a git worktree sharing it): `npm ci` here would
	@# empty that checkout's packages, so it is never run through one.
	@if [ -L node_modules ]; then echo "node_modules is a symlink to another checkout: not running npm ci through it"; \
	elif [ -d node_modules/better-sqlite3/build/Release ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then :; \
	else npm ci --no-audit --no-fund; fi

build: npm
	@# A clean output folder: a moved or deleted test must not keep running from a stale .js.
	rm -rf dist
	$(MAKE) --no-print-directory api-types
	npx tsc -p tsconfig.json
	@# The web console: typed from the same document, type-checked, bundled to web/dist.
	npx tsc -p web/tsconfig.json
	npx vite build --config web/vite.config.ts

# The API's types, generated and never committed: the OpenAPI document the server builds from its
# route schemas (scripts/dump-openapi.mjs), turned into TypeScript by openapi-typescript for the CLI
# (src/cli/api-schema.d.ts) and the console (web/src/api/schema.d.ts). The server must run to build
# the document, and the CLI's code needs the types to type-check, so the tree is first emitted without
# type checking (--noCheck: about a third of a full compile); `build` then compiles it in full.
API_TYPES := src/cli/api-schema.d.ts web/src/api/schema.d.ts
api-types: npm
	npx tsc -p tsconfig.json --noCheck
	node scripts/dump-openapi.mjs web/src/api/openapi.json
	npx openapi-typescript web/src/api/openapi.json -o web/src/api/schema.d.ts
	cp web/src/api/schema.d.ts src/cli/api-schema.d.ts

guest: build
	node dist/src/guest/build-test-guest.js $(GUEST_DIR)

demo: setup
	bash scripts/demo.sh

# A test run must leave the checkout as it found it: the status before and after must agree
# (outside a git checkout both are empty).
test: setup
	@before=$$(git status --porcelain 2>/dev/null); \
	node --test --test-concurrency=2 dist/test/; rc=$$?; \
	after=$$(git status --porcelain 2>/dev/null); \
	if [ "$$before" != "$$after" ]; then echo "make test changed the checkout:"; diff <(echo "$$before") <(echo "$$after"); exit 1; fi; \
	exit $$rc

# Prettier checks the formatting (.prettierrc.json, .prettierignore), ESLint the code and the layer rules
# (eslint.config.js, with type information: no build needed, only the generated API types, which `api-types`
# makes when they are missing). Both run, so one pass shows every finding.
lint: npm
	@# Type-aware rules read the CLI against the generated API types: make them once if missing.
	@[ -f src/cli/api-schema.d.ts ] && [ -f web/src/api/schema.d.ts ] || $(MAKE) --no-print-directory api-types
	@rc=0; npx prettier --check --log-level warn . || rc=$$?; npx eslint --max-warnings 0 . || rc=$$?; exit $$rc

# Rewrites the files Prettier would flag; review the diff like any other.
format: npm
	npx prettier --write --log-level warn .

# The console's screenshots in docs/screenshots/, from the browser test (make test writes them
# to .cache/screenshots/ instead): a deliberate update, reviewed like any diff.
screenshots: setup
	MAMORI_UPDATE_SCREENSHOTS=1 node --test dist/test/e2e/console.test.js

# virt-inspector (about 700 MB with its appliance) is only the baseline of bench/convert.
bench-deps:
	@command -v virt-inspector >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libguestfs-tools)
	@# supermin builds libguestfs' appliance from the host's kernel: a container has none.
	@ls /boot/vmlinuz-* >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-image-amd64

bench: setup bench-deps
	node dist/bench/vm-start/run.js && node dist/bench/replication/run.js && node dist/bench/wan/run.js && node dist/bench/hundred/run.js && node dist/bench/recovery/run.js && node dist/bench/migration/run.js && node dist/bench/convert/run.js && node dist/bench/pools/run.js && node dist/bench/storage/run.js && node dist/bench/security/run.js && node dist/bench/store/run.js && node dist/bench/cdp/run.js && node scripts/bench-readme.mjs

# The long fuzz run of every parser of outside input (test/fuzz/): FUZZ_EXECUTIONS inputs per target, or
# FUZZ_ARGS='--seconds 600'; prints a table and writes bench/results/fuzz.json.
FUZZ_EXECUTIONS ?= 1000000
.PHONY: fuzz
fuzz: deps build
	node dist/bench/fuzz/run.js --executions $(FUZZ_EXECUTIONS) $(FUZZ_ARGS)

clean:
	rm -rf dist web/dist $(API_TYPES) web/src/api/openapi.json
