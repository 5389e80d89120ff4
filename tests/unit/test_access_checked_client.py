"""The client `connect` hands out: a 401/403 from MLflow, whatever the call, is one TrackingError line naming the
server, the user, what was refused and the permission to ask for; everything else passes through untouched.
(The real server's answers are in tests/flows/test_team_server.py.)"""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException, RestException
from mlflow.utils.rest_utils import get_error_code

from paperline.ops.tracking.client import AccessCheckedClient, TrackingError

URL = "http://127.0.0.1:5000"


class FakeClient:
    tracking_uri = URL

    def __init__(self, error: Exception | None = None):
        self.error = error

    def set_registered_model_alias(self, name, alias, version):
        if self.error:
            raise self.error
        return "moved"

    def delete_model_version(self, name, version):
        raise self.error

    def get_run(self, run_id):
        raise self.error


def test_a_refused_alias_move_is_one_line_naming_user_model_and_permission(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    refused = RestException({"error_code": "PERMISSION_DENIED", "message": "Permission denied"})
    client = AccessCheckedClient(FakeClient(refused))
    with pytest.raises(TrackingError) as error:
        client.set_registered_model_alias("sbert_sts", "champion", "2")
    assert str(error.value) == (
        f"MLflow at {URL} does not allow user 'bob' to point the alias 'champion' of the model 'sbert_sts' at "
        "version 2 (403 Forbidden); ask the owner of the registered model 'sbert_sts' (the user who created it has "
        "MANAGE) or an MLflow admin for EDIT permission on it, or set MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD to an account that has it")
    assert "\n" not in str(error.value)


def test_the_plain_text_refusal_of_basic_auth_and_a_401_are_caught_too(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    # basic-auth answers a plain-text body: MLflow's client makes the error code from the HTTP status
    plain = MlflowException("API request failed with error code 403 != 200", error_code=get_error_code(403))
    with pytest.raises(TrackingError, match="to delete version 3 of the model 'm' .* for MANAGE permission on it"):
        AccessCheckedClient(FakeClient(plain)).delete_model_version(name="m", version="3")
    login = MlflowException("401 != 200", error_code=get_error_code(401))
    with pytest.raises(TrackingError, match="refused the login of user 'bob' \\(401 Unauthorized"):
        AccessCheckedClient(FakeClient(login)).get_run("abc")


def test_other_errors_and_results_pass_through():
    missing = RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such model"})
    with pytest.raises(RestException):
        AccessCheckedClient(FakeClient(missing)).set_registered_model_alias("m", "champion", "1")
    assert AccessCheckedClient(FakeClient()).set_registered_model_alias("m", "champion", "1") == "moved"
    assert AccessCheckedClient(FakeClient()).tracking_uri == URL
