package lock_test

func stopBenchNodes() {}
