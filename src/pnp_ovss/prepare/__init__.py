"""``pnp-ovss prepare``: the five benchmarks in the layout the dataset adapters read, made from the official
downloads (archives or extracted folders), without mmsegmentation or the Detail API.

``sources`` finds and checks the downloads, ``plans`` says what each benchmark needs, ``ids`` holds the id
conversions (pure functions), ``run`` writes the files, ``cli`` is the command.
"""
