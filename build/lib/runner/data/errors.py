"""The error the data code raises for a value it cannot use; job.py turns it into a ConfigError."""


class DataError(ValueError):
    """A data-set argument that is not allowed: which argument, its value and what is wrong.

    `key` is the loader's argument name, which is also the key under `dataset.` in the config.
    """

    def __init__(self, key, value, rule):
        super().__init__(f"{key}={value!r} is not allowed: {rule}")
        self.key, self.value, self.rule = key, value, rule
