# Helpers of the data stage (rules/data.smk): the raw splits and the hub download's flags.


def raw_files():
    return expand(f"{RAW_DIR}/{{split}}.parquet", split=SPLITS)


def hub_split_flags():
    splits = config["data"]["hub"]["splits"]
    return shlex.join(f"--split={ours}={theirs}" for ours, theirs in splits.items())
