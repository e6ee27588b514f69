"""The suite's test processes honour xdist groups: the SLURM tests share one process, and tests that
share a module's fixture (a trained run, a sweep) run where it was built (conftest.py)."""

import os

import pytest


def under_loadgroup(request) -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ and bool(request.config.getvalue("loadgroup"))


@pytest.mark.xdist_group("grouping-check")
def test_a_marked_group_reaches_the_scheduler(request):
    if not under_loadgroup(request):
        pytest.skip("only `make test`'s --dist loadgroup groups tests")
    assert request.node.nodeid.endswith("@grouping-check"), (
        "pytest-xdist did not tag this test's id with its group: --dist loadgroup spreads grouped tests (pytest-xdist#1386)"
    )


@pytest.fixture(scope="module")
def built_here():
    return os.environ.get("PYTEST_XDIST_WORKER")


def test_a_test_using_a_module_fixture_is_grouped_with_it(request, built_here):
    if not under_loadgroup(request):
        pytest.skip("only `make test`'s --dist loadgroup groups tests")
    assert request.node.nodeid.endswith("@tests/test_xdist_groups.py:built_here")
