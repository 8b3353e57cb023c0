"""The few-shot machinery: the learners' base (``learner``: outer step, evaluation by episode, fit/predict) and
the gradient-based learners' functional inner loop (``inner_loop``)."""
