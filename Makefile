# hotplugd — `make help` lists the targets.

GO          ?= go
BIN         := bin/hotplugd
CONFIG      ?= configs/rules.yaml
VERSION     ?= $(shell git describe --tags --always --dirty --abbrev=12 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
# BUILD is how build makes the binary: dev (go's defaults), cgo (the
# Debian package's: os/user asks the C library, so users from NSS such as
# LDAP or SSSD resolve; PIE, full RELRO, fortified C) or static (the release
# tarball's: no libc, users from /etc/passwd and /etc/group only). cgo and
# static are stripped and hold no build id or build paths, so one commit
# gives the same bytes on every build.
BUILD       ?= dev
GOBUILD_dev    = $(GO) build -trimpath -ldflags '$(LDFLAGS)'
GOBUILD_cgo    = CGO_ENABLED=1 CGO_CPPFLAGS=-D_FORTIFY_SOURCE=2 CGO_CFLAGS='-O2 -fstack-protector-strong' \
	$(GO) build -trimpath -buildmode=pie \
	-ldflags '$(LDFLAGS) -s -w -buildid= -linkmode=external -extldflags=-Wl,-z,relro,-z,now'
GOBUILD_static = CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS) -s -w -buildid='
STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 30s
# The packages whose tests need root and a real kernel run one at a time:
# they share loop devices and the uevent stream.
TESTFLAGS   ?= -count=1 -p 1 -timeout 30m

.DEFAULT_GOAL := help
.PHONY: help build run test check lint race bench fuzz clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/hotplugd (BUILD=dev, cgo or static)
	$(if $(GOBUILD_$(BUILD)),,$(error BUILD=$(BUILD): want dev, cgo or static))
	$(GOBUILD_$(BUILD)) -o $(BIN) ./cmd/hotplugd

run: build ## run the daemon in the foreground on the shipped default rules
	$(BIN) run --config $(CONFIG)

test: ## run every test (integration tests need root and a real kernel)
	$(GO) test $(TESTFLAGS) ./...

lint: ## gofmt gate, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./internal/e2e/...
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags e2e ./internal/e2e/...

race: ## run every test with the race detector
	$(GO) test -race $(TESTFLAGS) ./...

check: lint race ## lint, then the race tests

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem -p 1 ./...

fuzz: ## run each fuzz target for FUZZTIME
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean: ## remove build output
	rm -rf bin dist

# Installing. DESTDIR stages the whole tree into a directory (for packages);
# PREFIX moves what is not configuration (binary, man pages, completions).
# The unit's ExecStart follows BINDIR. /etc/hotplugd is fixed: it is the
# binary's default --config.
PREFIX      ?= /usr
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/vendor-completions
UNITDIR     ?= $(or $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null),/lib/systemd/system)
CONFDIR     := /etc/hotplugd
INSTALL     ?= install
GOMD2MAN    := $(GO) run github.com/cpuguy83/go-md2man/v2@v2.0.7
MANPAGES    := dist/man/hotplugd.8 dist/man/hotplugd.rules.5

# The Debian package: version from the latest v* tag (v1.2.3-4-gabc ->
# 1.2.3+4.gabc), else 0.0.0~dev+g<commit>; architecture from GOARCH.
# Every file's time is the commit's (SOURCE_DATE_EPOCH), for the same
# bytes from every build of one commit.
DISTDIR     ?= dist
DEBDIR      ?= $(DISTDIR)
DEBROOT      = $(DEBDIR)/deb-root
DEB_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' --abbrev=12 2>/dev/null) \
	&& echo "$$v" | sed -e 's/^v//' -e 's/-\([0-9][0-9]*\)-g\([0-9a-f]*\)$$/+\1.g\2/' -e 's/-/~/g' \
	|| { c=$$(git rev-parse --short=12 HEAD 2>/dev/null) && echo "0.0.0~dev+g$$c" || echo 0.0.0~dev; })
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
DEB_ARCH    ?= $(shell a=$$($(GO) env GOARCH); case $$a in (386) a=i386;; (arm) a=armhf;; \
	(ppc64le) a=ppc64el;; (mipsle) a=mipsel;; (mips64le) a=mips64el;; esac; echo $$a)

.PHONY: man install uninstall deb tarball release

man: $(MANPAGES) ## render the man pages (docs/man/*.md) to dist/man

dist/man/%: docs/man/%.md
	@mkdir -p dist/man
	$(GOMD2MAN) -in $< -out $@

dist/man/%.gz: dist/man/%
	gzip -9n < $< > $@

install: build $(MANPAGES:=.gz) ## install under DESTDIR and PREFIX (/usr); keeps an existing /etc/hotplugd/rules.yaml
	$(INSTALL) -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(CONFDIR) \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	$(INSTALL) -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/hotplugd
	@mkdir -p dist
	sed 's|/usr/bin/hotplugd|$(BINDIR)/hotplugd|g' packaging/systemd/hotplugd.service > dist/hotplugd.service
	$(INSTALL) -m 0644 dist/hotplugd.service $(DESTDIR)$(UNITDIR)/hotplugd.service
	$(INSTALL) -m 0644 dist/man/hotplugd.8.gz $(DESTDIR)$(MANDIR)/man8/hotplugd.8.gz
	$(INSTALL) -m 0644 dist/man/hotplugd.rules.5.gz $(DESTDIR)$(MANDIR)/man5/hotplugd.rules.5.gz
	$(INSTALL) -m 0644 contrib/completion/hotplugd.bash $(DESTDIR)$(BASHCOMPDIR)/hotplugd
	$(INSTALL) -m 0644 contrib/completion/_hotplugd $(DESTDIR)$(ZSHCOMPDIR)/_hotplugd
	@f=$(DESTDIR)$(CONFDIR)/rules.yaml; \
	if [ -e "$$f" ] || [ -L "$$f" ]; then echo "kept $$f: an existing rules file is never overwritten"; \
	else echo "$(INSTALL) -m 0644 configs/rules.yaml $$f"; $(INSTALL) -m 0644 configs/rules.yaml "$$f"; fi
	@if [ -z "$(DESTDIR)" ]; then \
	  echo; echo "Check the rules with: $(BINDIR)/hotplugd check"; \
	  echo "Start the service with: systemctl daemon-reload && systemctl enable --now hotplugd"; fi

uninstall: ## remove what install installed, except /etc/hotplugd/rules.yaml
	@if [ -z "$(DESTDIR)" ] && [ -e $(UNITDIR)/hotplugd.service ] && command -v systemctl >/dev/null; then \
	  now=; [ -d /run/systemd/system ] && now=--now; \
	  echo "systemctl disable $$now hotplugd.service"; systemctl disable $$now hotplugd.service || true; fi
	rm -f $(DESTDIR)$(BINDIR)/hotplugd $(DESTDIR)$(UNITDIR)/hotplugd.service \
		$(DESTDIR)$(MANDIR)/man8/hotplugd.8.gz $(DESTDIR)$(MANDIR)/man5/hotplugd.rules.5.gz \
		$(DESTDIR)$(BASHCOMPDIR)/hotplugd $(DESTDIR)$(ZSHCOMPDIR)/_hotplugd
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
	@if [ -e $(DESTDIR)$(CONFDIR)/rules.yaml ]; then \
	  echo "kept $(DESTDIR)$(CONFDIR)/rules.yaml (your rules); remove it yourself if it is no longer needed"; fi

deb: ## build dist/hotplugd_VERSION_ARCH.deb (the cgo binary; dpkg-deb, no root needed)
	rm -rf $(DEBROOT) $(DEBDIR)/shlibs
	$(MAKE) --no-print-directory install BUILD=cgo BIN=$(DEBDIR)/cgo/hotplugd DESTDIR=$(DEBROOT) \
		PREFIX=/usr BINDIR=/usr/bin MANDIR=/usr/share/man \
		BASHCOMPDIR=/usr/share/bash-completion/completions ZSHCOMPDIR=/usr/share/zsh/vendor-completions
	$(INSTALL) -d -m 0755 $(DEBROOT)/DEBIAN $(DEBROOT)/usr/share/doc/hotplugd $(DEBDIR)/shlibs/debian
	$(INSTALL) -m 0644 packaging/deb/copyright $(DEBROOT)/usr/share/doc/hotplugd/copyright
	packaging/deb/changelog $(DEB_VERSION) | gzip -9n > $(DEBROOT)/usr/share/doc/hotplugd/changelog.gz
	$(INSTALL) -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm $(DEBROOT)/DEBIAN/
	$(INSTALL) -m 0644 packaging/deb/conffiles $(DEBROOT)/DEBIAN/conffiles
	cd $(DEBROOT) && find * -path DEBIAN -prune -o -type f ! -path etc/hotplugd/rules.yaml -print \
		| LC_ALL=C sort | xargs md5sum > DEBIAN/md5sums
	: > $(DEBDIR)/shlibs/debian/control # dpkg-shlibdeps wants one
	deps=$$(cd $(DEBDIR)/shlibs && dpkg-shlibdeps -O -e $(abspath $(DEBROOT))/usr/bin/hotplugd) && \
	sed -e 's/@VERSION@/$(DEB_VERSION)/' -e 's/@ARCH@/$(DEB_ARCH)/' -e "s/@DEPENDS@/$${deps#shlibs:Depends=}/" \
		-e "s/@SIZE@/$$(du -sk --apparent-size --exclude=DEBIAN $(DEBROOT) | cut -f1)/" \
		packaging/deb/control > $(DEBROOT)/DEBIAN/control
	chmod -R a+rX,go-w $(DEBROOT)
	find $(DEBROOT) -exec touch -h -d @$(SOURCE_DATE_EPOCH) {} +
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) dpkg-deb --root-owner-group -Zxz --build $(DEBROOT) \
		$(DEBDIR)/hotplugd_$(DEB_VERSION)_$(DEB_ARCH).deb

# The release tarball: the static binary and all make install installs
# with PREFIX=/usr/local, as it lays them out, under one directory, with
# LICENSE. Sorted, numeric owners, the commit's time, gzip without a name.
TARNAME      = hotplugd-$(patsubst v%,%,$(VERSION))-linux-$(shell $(GO) env GOARCH)
TARROOT      = $(DISTDIR)/tar-root

tarball: ## build dist/hotplugd-VERSION-linux-ARCH.tar.gz (the static binary)
	rm -rf $(TARROOT)
	$(MAKE) --no-print-directory install BUILD=static BIN=$(DISTDIR)/static/hotplugd DESTDIR=$(TARROOT)/$(TARNAME) \
		PREFIX=/usr/local UNITDIR=/usr/local/lib/systemd/system
	$(INSTALL) -m 0644 LICENSE $(TARROOT)/$(TARNAME)/LICENSE
	tar --sort=name --owner=0 --group=0 --numeric-owner --mode=u+w,go-w,a+rX --format=gnu \
		--mtime=@$(SOURCE_DATE_EPOCH) -C $(TARROOT) -cf - $(TARNAME) | gzip -9n > $(DISTDIR)/$(TARNAME).tar.gz

release: ## dist/: the .deb, the static tarball and SHA256SUMS; one commit, the same bytes
	$(MAKE) --no-print-directory deb DEBDIR=$(DISTDIR)
	$(MAKE) --no-print-directory tarball DISTDIR=$(DISTDIR)
	cd $(DISTDIR) && sha256sum hotplugd_$(DEB_VERSION)_$(DEB_ARCH).deb $(TARNAME).tar.gz > SHA256SUMS
	@cat $(DISTDIR)/SHA256SUMS

# The side-by-side benchmark (tools/benchcompare): hotplugd, then
# systemd-udevd and busybox mdev -d when installed, each alone with one
# equivalent rule, on a storm of EVENTS uevents and SAMPLES one-at-a-time
# latency samples. Root only. SHORT=1 is the CI size.
EVENTS      ?= 100000
SAMPLES     ?= 200
ifeq ($(SHORT),1)
EVENTS      := 10000
SAMPLES     := 50
endif

.PHONY: bench-compare

bench-compare: build ## hotplugd vs udevd vs mdev: throughput and latency table (root; SHORT=1: 10,000 events, 50 samples)
	$(GO) run ./tools/benchcompare -hotplugd $(BIN) -events $(EVENTS) -samples $(SAMPLES)

# The real-machine suite (internal/e2e, build tag e2e): QEMU guests booted
# from the distribution's kernel, with USB sticks plugged and pulled on an
# emulated xHCI bus and the .deb installed under systemd as PID 1. Root,
# qemu-system-x86, linux-image-amd64, busybox-static and the mkfs tools
# (.ci/run installs them); about 10 minutes under TCG. The shell-mode
# guest runs a static build (CGO_ENABLED=0), the systemd guest the .deb.
.PHONY: e2e

e2e: deb ## the real-machine suite: USB sticks and systemd in QEMU guests (root, ~10 min)
	$(MAKE) --no-print-directory build BUILD=static BIN=$(DEBDIR)/static/hotplugd
	HOTPLUGD_E2E_BIN=$(CURDIR)/$(DEBDIR)/static/hotplugd HOTPLUGD_E2E_DEB=$(CURDIR)/$(DEBDIR)/hotplugd_$(DEB_VERSION)_$(DEB_ARCH).deb \
		$(GO) test -tags e2e -count=1 -timeout 20m ./internal/e2e/

# The shipped recording of a USB stick (configs/examples/testdata) is
# made in the shell-mode guest by the suite's TestStickRecording, which
# also replays it; then each of its expectations is rewritten, with the
# rules its name gives (RULES--usb-stick.expect.yaml: configs/rules.yaml
# or configs/examples/RULES.yaml). Review the diff before committing it.
STICK_RECORDING := configs/examples/testdata/usb-stick.jsonl
.PHONY: record-stick

record-stick: ## re-record configs/examples/testdata/usb-stick.jsonl in a QEMU guest, rewrite its expectations (root, ~1 min)
	$(MAKE) --no-print-directory build BUILD=static BIN=$(DISTDIR)/static/hotplugd
	HOTPLUGD_E2E_BIN=$(CURDIR)/$(DISTDIR)/static/hotplugd HOTPLUGD_E2E_RECORD=$(CURDIR)/$(STICK_RECORDING) \
		$(GO) test -tags e2e -count=1 -timeout 10m -run '^TestStickRecording$$' ./internal/e2e/
	@for x in $(dir $(STICK_RECORDING))*--$(notdir $(STICK_RECORDING:.jsonl=)).expect.yaml; do \
	  r=$${x##*/}; r=$${r%%--*}; c=configs/examples/$$r.yaml; [ "$$r" = rules ] && c=configs/rules.yaml; \
	  echo "$(DISTDIR)/static/hotplugd test --config $$c --replay $(STICK_RECORDING) --expect $$x --update"; \
	  $(DISTDIR)/static/hotplugd test --config $$c --replay $(STICK_RECORDING) --expect $$x --update || exit 1; \
	done
