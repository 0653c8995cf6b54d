"""Reports over finished runs: the leaderboard and the upstream profile."""
