"""The doctor's pure part: findings, the decision function of every check over observed facts,
and the engine that turns findings into Node conditions and rate-limited repairs."""
