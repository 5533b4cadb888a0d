//! Integration tests of citybrain live in tests/; this library holds their shared harness.
