"""Secret detection and redaction (golfrun/secrets.py)."""

from golfrun.secrets import REDACTED, LineRedactor, is_secret_name, redact_data, redact_env, redact_text

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQUJDREVGR0hJSktMTU5P\n-----END OPENSSH PRIVATE KEY-----\n"


def test_secret_names() -> None:
    for name in ("HF_TOKEN", "RUNPOD_API_KEY", "my_secret", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY"):
        assert is_secret_name(name), name
    for name in ("TRAIN_BATCH_TOKENS", "TOKENIZER_PATH", "PUBLIC_KEY", "SEED", "VOCAB_SIZE"):
        assert not is_secret_name(name), name


def test_env_and_nested_data_are_redacted() -> None:
    assert redact_env({"HF_TOKEN": "hf_abc", "SEED": "0"}) == {"HF_TOKEN": REDACTED, "SEED": "0"}
    data = redact_data({"env": {"RUNPOD_API_KEY": "rp_x", "N": 1}, "log": ["x", KEY]})
    assert data["env"]["RUNPOD_API_KEY"] == REDACTED and data["env"]["N"] == 1
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in str(data)


def test_literal_values_are_scrubbed_from_text() -> None:
    assert redact_text("token is hf_secretvalue here", ["hf_secretvalue"]) == f"token is {REDACTED} here"


def test_a_key_block_streamed_line_by_line_leaves_no_body() -> None:
    redact = LineRedactor(["hf_secretvalue"])
    lines = ["before hf_secretvalue\n", *KEY.splitlines(keepends=True), "after\n"]
    out = "".join(redact(line) for line in lines)
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in out and "QUJDREVGR0hJSktMTU5P" not in out
    assert out == f"before {REDACTED}\n{REDACTED}\nafter\n"


def test_a_key_block_on_one_line_is_redacted_and_the_stream_goes_on() -> None:
    redact = LineRedactor()
    one_line = KEY.replace("\n", " ").strip() + "\n"
    assert redact(one_line) == f"{REDACTED}\n"
    assert redact("next line\n") == "next line\n"
