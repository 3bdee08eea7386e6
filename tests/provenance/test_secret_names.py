"""What counts as a secret name (golfrun/secrets.py), as preservation relies on it."""

from golfrun.secrets import is_secret_name, redact_env, secret_values_from_env


def test_token_counts_are_not_secrets() -> None:
    env = {"TRAIN_BATCH_TOKENS": "8192", "VAL_BATCH_TOKENS": "8192", "HF_TOKEN": "hf_abcdef", "MY_SECRET": "s3cr3t!"}
    assert not is_secret_name("TRAIN_BATCH_TOKENS")
    assert not is_secret_name("TOKENIZER_PATH") and not is_secret_name("tokenizer_path")
    assert redact_env(env)["TRAIN_BATCH_TOKENS"] == "8192"
    # were "8192" a secret value, every log line with that number would lose it
    assert sorted(secret_values_from_env(env)) == ["hf_abcdef", "s3cr3t!"]


def test_credentials_are_secrets() -> None:
    for name in ("HF_TOKEN", "RUNPOD_API_KEY", "MY_SECRET", "DB_PASSWORD", "SSH_KEY_PATH", "hub_token", "GH_TOKEN_TOKENS"):
        assert is_secret_name(name), name
