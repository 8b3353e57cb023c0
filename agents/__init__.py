"""Meta-learning agents, one algorithm per module (MAML-RL, RL^2, few-shot learners) as they land."""
