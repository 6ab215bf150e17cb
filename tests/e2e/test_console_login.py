"""The console with SASL on the broker (the console issue, with the security issue's SASL and
ACLs): every page, API call and /metrics needs a login (the form's session or HTTP Basic with
a SASL user's password), and the request then acts as that user, so ACLs decide what it sees."""

import base64
import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid

from strata_e2e import assert_delivered, confluent_produce

PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'username="admin" password="admin-secret" user_admin="admin-secret" '
              'user_alice="alice-secret";')


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def client():
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(jar))
    return opener, jar


def call(opener, url, data=None, headers=None, method=None):
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with opener.open(request, timeout=20) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_console_requires_a_login_and_applies_acls(broker_factory):
    broker = broker_factory(
        listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
        properties={
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:admin",
        })
    admin_conf = {"security.protocol": "sasl_plaintext", "sasl.mechanism": "PLAIN",
                  "sasl.username": "admin", "sasl.password": "admin-secret"}
    suffix = uuid.uuid4().hex[:6]
    shared, secret = f"shared-{suffix}", f"secret-{suffix}"
    for topic in (shared, secret):
        assert_delivered(confluent_produce(broker.bootstrap, topic,
                                           [{"value": f"in {topic}".encode()}], **admin_conf))
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                       ResourcePatternType, ResourceType)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **admin_conf})
    grants = [AclBinding(ResourceType.TOPIC, shared, ResourcePatternType.LITERAL, "User:alice",
                         "*", op, AclPermissionType.ALLOW)
              for op in (AclOperation.READ, AclOperation.DESCRIBE)]
    for f in admin.create_acls(grants).values():
        f.result(timeout=20)

    base = broker.console_url().rstrip("/")
    anon, _ = client()
    # Nothing without a login but the health check and the login page.
    status, headers, _ = call(anon, base + "/api/v1/topics")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert call(anon, base + "/metrics")[0] == 401
    status, headers, _ = call(anon, base + "/ui/topics?q=x")
    assert status == 303 and headers["Location"] == "/ui/login?next=%2Fui%2Ftopics%3Fq%3Dx"
    assert call(anon, base + "/healthz")[0] == 200
    assert call(anon, base + "/ui/login")[0] == 200
    # HTTP Basic: a wrong password is refused; the right one acts as that user.
    assert call(anon, base + "/api/v1/topics", headers=basic("alice", "nope"))[0] == 401
    assert call(anon, base + "/metrics", headers=basic("admin", "admin-secret"))[0] == 200
    status, _, body = call(anon, base + "/api/v1/topics", headers=basic("alice", "alice-secret"))
    assert status == 200
    assert [t["name"] for t in json.loads(body)["topics"]] == [shared]
    status, _, body = call(anon, base + f"/api/v1/topics/{secret}/messages",
                           headers=basic("alice", "alice-secret"))
    assert status == 403 and json.loads(body)["kafka_error"] == "TOPIC_AUTHORIZATION_FAILED"
    status, _, body = call(anon, base + f"/api/v1/topics/{shared}/messages?from=oldest",
                           headers=basic("alice", "alice-secret"))
    assert status == 200 and json.loads(body)["messages"][0]["value"]["data"] == f"in {shared}"
    assert call(anon, base + "/api/v1/topics", headers=basic("admin", "admin-secret"))[0] == 200

    # The login form: a session cookie, then pages as alice; logging out ends it.
    browser, jar = client()
    status, _, page = call(browser, base + "/ui/login?next=/ui/topics")
    token = re.search(rb'name="_csrf" value="([0-9a-f]{32})"', page).group(1).decode()
    form = lambda **f: urllib.parse.urlencode({"_csrf": token, **f}).encode()
    form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, page = call(browser, base + "/ui/login", form(user="alice", password="wrong",
                                                              next="/ui/topics"), form_headers)
    assert status == 401 and b"Wrong user or password" in page
    status, headers, _ = call(browser, base + "/ui/login", form(user="alice",
                              password="alice-secret", next="/ui/topics"), form_headers)
    assert status == 303 and headers["Location"] == "/ui/topics"
    assert any(c.name == "strata_session" for c in jar)
    status, _, page = call(browser, base + "/ui/topics")
    assert status == 200 and shared.encode() in page and secret.encode() not in page
    assert b"Signed in as alice" in page
    assert call(browser, base + f"/ui/topics/{secret}")[0] == 403
    # A login may not send the browser elsewhere.
    status, headers, _ = call(browser, base + "/ui/login", form(user="alice",
                              password="alice-secret", next="https://evil.example/"), form_headers)
    assert headers["Location"] == "/ui/topics"
    status, headers, _ = call(browser, base + "/ui/logout", form(), form_headers)
    assert status == 303 and headers["Location"] == "/ui/login"
    assert call(browser, base + "/ui/topics")[0] == 303
