"""The offline test environment (docs/architecture.md, "Tests"): a local registry seeded with
skopeo, and a private dockerd. Used by the test suite, the examples' quick start and the benchmarks.

Not part of the installed package: it lives beside the tests and is run from a checkout.
"""
