"""Networks: functional parameters and the differentiable inner step (``functional``); MLP and Conv4 (``nets``)."""
