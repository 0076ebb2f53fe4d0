"""Models sgld builds itself: tiny random-weight folders for tests and demos, full-size `random:` folders for benchmarks."""
