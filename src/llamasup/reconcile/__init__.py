"""The reconciler: pool contract, demand, leases, executor, the loop and its history."""
