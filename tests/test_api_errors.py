"""Wrong calls of the library API raise TypeError or ValueError naming the argument and what
was expected, before any evaluation runs."""

from __future__ import annotations

import pytest

import layernas
from layernas import Budget, Target
from layernas.config import SearchConfig
from tests.toy_spaces import AdditiveEvaluator, AdditiveSpace

SPACE = AdditiveSpace([[1, 5, 9], [0, 4, 8], [2, 3, 7]], [[0.1, 0.5, 0.9], [0.0, 0.4, 0.8], [0.2, 0.3, 0.7]])
EV = AdditiveEvaluator(SPACE)


class FloatEvaluator:
    def evaluate(self, trial):
        return 0.5


WRONG_SEARCH_CALLS = [
    ({"target": "cost"}, TypeError, "target must be a layernas.Target"),
    ({"target": 5}, TypeError, "target must be"),
    ({"target": {"metric": "cost"}}, TypeError, "target must be"),
    ({"space": None}, TypeError, "space must be a SearchSpace"),
    ({"space": "nats-tss"}, TypeError, "space must be a SearchSpace"),
    ({"evaluator": None}, TypeError, "evaluator must be an Evaluator"),
    ({"evaluator": lambda trial: 1.0}, TypeError, "evaluator must be"),
    ({"searcher": 42}, TypeError, "searcher must be a name"),
    ({"searcher": None}, TypeError, "searcher must be a name"),
    ({"searcher": "gradient"}, ValueError, "unknown searcher 'gradient'"),
    ({"searcher": "random", "searcher_options": {"num_buckets": 5}}, ValueError,
     "num_buckets: not options of searcher 'random'"),
    ({"searcher_options": {"buckets": 5}}, ValueError, "buckets: not options of searcher 'layernas'"),
    ({"searcher_options": [("num_buckets", 5)]}, TypeError, "searcher_options must be a mapping"),
    ({"seed": 1.7}, TypeError, "seed must be an int"),
    ({"seed": "3"}, TypeError, "seed must be an int"),
    ({"seed": True}, TypeError, "seed must be an int"),
    ({"seed": -1}, ValueError, "seed must be 0 or more"),
    ({"budget": "10"}, ValueError, "budget must be a Budget"),
    ({"budget": 2.5}, ValueError, "budget must be a Budget"),
    ({"budget": None}, ValueError, "budget must be a Budget"),
    ({"budget": 0}, ValueError, "budget evaluations must be a positive integer"),
    ({"budget": True}, ValueError, "budget must be a Budget"),
    ({"out_dir": 5}, TypeError, "out_dir must be a path"),
    ({"out_dir": ""}, ValueError, "out_dir must be a directory path"),
    ({"resume": "yes"}, TypeError, "resume must be True or False"),
    ({"resume": True}, ValueError, "resume=True needs the out_dir"),
    ({"progress": 1}, TypeError, "progress must be True or False"),
    ({"settings": ["a"]}, TypeError, "settings must be a mapping"),
    ({"distributed": "no"}, TypeError, "distributed must be True, False or None"),
    ({"max_in_flight": 0}, ValueError, "max_in_flight=0"),
    ({"max_in_flight": 1.5}, ValueError, "max_in_flight=1.5"),
    ({"target": Target("madds", max=3)}, ValueError, "unknown cost metric 'madds'"),
]


@pytest.mark.parametrize("change, error, needle", WRONG_SEARCH_CALLS)
def test_wrong_search_calls(change, error, needle):
    kwargs = {"space": SPACE, "evaluator": EV, "budget": 3, "target": Target("cost", max=20), **change}
    with pytest.raises(error) as info:
        layernas.search(**kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_an_evaluator_returning_a_float_is_named():
    try:
        result = layernas.search(SPACE, FloatEvaluator(), 2, Target("cost", max=20))
    except TypeError as e:  # refusing the evaluator outright is fine
        assert "EvalResult" in str(e)
        return
    # so is failing each of its trials with a reason that says what was expected
    assert result.best is None and all("EvalResult" in e for e in result.history.error)


@pytest.mark.parametrize("kwargs, error, needle", [
    ({"metric": "flops", "max": "50"}, TypeError, "target max must be a number, got '50'"),
    ({"metric": "flops", "min": [1]}, TypeError, "target min must be a number"),
    ({"metric": "flops", "max": True}, TypeError, "target max must be a number"),
    ({"metric": "flops", "max": float("inf")}, ValueError, "target max must be a finite number"),
    ({"metric": "flops", "caps": {"params": "3"}}, TypeError, "target params must be a number"),
    ({"metric": "flops", "caps": [("params", 3)]}, TypeError, "target caps must be a mapping"),
    ({"metric": ""}, TypeError, "target metric must be a non-empty string"),
    ({"metric": None}, TypeError, "target metric must be a non-empty string"),
    ({"metric": "flops", "max": 1, "min": 2}, ValueError, "target min 2 is above target max 1"),
])
def test_wrong_targets(kwargs, error, needle):
    with pytest.raises(error, match=None) as info:
        Target(**kwargs)
    assert needle in str(info.value)


@pytest.mark.parametrize("kwargs, needle", [
    ({"evaluations": "5"}, "budget evaluations must be a positive integer"),
    ({"evaluations": 1.5}, "budget evaluations must be a positive integer"),
    ({"seconds": "60"}, "budget seconds must be a positive finite number"),
    ({"seconds": float("nan")}, "budget seconds"),
    ({}, "budget needs evaluations or seconds"),
])
def test_wrong_budgets(kwargs, needle):
    with pytest.raises(ValueError) as info:
        Budget(**kwargs)
    assert needle in str(info.value)


@pytest.mark.parametrize("kwargs, needle", [
    ({"space": "nope"}, "unknown space 'nope'"),
    ({"space": "nats-tss", "seed": 1.7}, "--seed 1.7: expected an integer"),
    ({"space": "nats-tss", "budget_evals": "5"}, "--budget-evals '5': expected an integer"),
    ({"space": "nats-tss", "fraction": "0.5"}, "--flops-fraction '0.5': expected a number"),
    ({"space": None}, "--space must be a space name"),
    ({"space": "nats-tss", "searcher": "rea", "num_buckets": 4}, "--num-buckets 4: applies to --searcher layernas"),
    ({"space": "nats-tss", "dataset": ""}, "--dataset ''"),
    ({"space": "nats-tss", "backend": "spark"}, "--backend 'spark'"),
    ({"space": "nats-tss", "evaluator": "oracle"}, "--evaluator 'oracle'"),
    ({"space": "mobilenetv2"}, "must be trained"),
])
def test_wrong_configs(kwargs, needle):
    with pytest.raises((TypeError, ValueError)) as info:
        SearchConfig(**kwargs)
    assert needle in str(info.value)


def test_a_config_pickles_and_rebuilds_its_evaluator():
    import functools
    import pickle

    from layernas import registry

    config = SearchConfig(space="nats-tss", dataset="cifar100", budget_evals=5)
    factory = pickle.loads(pickle.dumps(functools.partial(registry.build_evaluator, config)))
    evaluator = factory()
    assert evaluator.dataset == "cifar100" and config.run_settings()["table"] == "default"
