"""conf/ stays at the top of the clone (the project's layout) and is installed as `rlvr/conf/`, so an
installed rlvr (wheel, sdist, `pip install git+...`) finds its config tree from any directory
(rlvr.config.conf_dir). pyproject.toml cannot map a directory to a package whose sub-directories are found
automatically, hence these lines; everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

config_groups = [f"rlvr.conf.{group}" for group in find_namespace_packages("conf")]
setup(packages=[*find_namespace_packages(include=["rlvr*"]), "rlvr.conf", *config_groups],
      package_dir={"rlvr.conf": "conf"})
