"""The RL machinery: the sampler protocol and its local, process-pool and Ray backends; feed-forward and recurrent
policies; returns, GAE and the linear baseline; the trust-region step; SAC pieces and replay buffers; the
MAML-RL base (``meta_rl.MAMLRLAgent``); videos."""
