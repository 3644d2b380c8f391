"""Raw SQL behind the `Querier` protocol: pools, transactions, RLS session, repositories."""
