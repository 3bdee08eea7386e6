"""The six stages. Each module has `run(ctx: StageContext) -> Summary` and a header docstring
stating its pass/kill rule."""
