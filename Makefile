# One command per routine task. See README.md.
.PHONY: test faults bench demo lint crds chart-docs control-plane control-plane-start control-plane-stop

## test: lints, then the whole test suite on a freshly started local control plane
test:
	hack/test.sh

## faults: the fault suite (about 10 minutes a run), twice in a row, on a control plane of its own; writes RELIABILITY.md
faults:
	hack/faults.sh

## bench: every benchmark, release build (about 15 minutes): memory and API requests per token, throughput against a raw client, cold start, rotation storm, the token service under load, signing per algorithm (TOKENSMITH_SCALE_STEPS=1000,10000); writes BENCHMARKS.md
bench:
	hack/bench.sh

## demo: build, start a local control plane, run the operator on examples/ and show a token's life; stops everything after
demo:
	hack/demo.sh

## lint: rustfmt and clippy, warnings are errors
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

## crds: regenerate crds/ (and the chart's crds/) from the Rust types
crds:
	cargo run --quiet -- crdgen --write .

## chart-docs: regenerate charts/tokensmith/README.md from values.yaml (helm-docs, built by hack/control-plane.sh)
chart-docs:
	cd charts/tokensmith && "$$(../../hack/control-plane.sh build)/helm-docs" --chart-search-root . --skip-version-footer --log-level warning

## control-plane: build (or reuse) etcd, kube-apiserver, kube-controller-manager, kubectl, helm, kubeconform, promtool, helm-docs, hey
control-plane:
	hack/control-plane.sh build

## control-plane-start / control-plane-stop: a local control plane in target/control-plane
control-plane-start:
	hack/control-plane.sh start

control-plane-stop:
	hack/control-plane.sh stop
