"""The audit trail, generated from the contract: every mutating operation declares `x-audit`
(or is one of the sign-in flows below), and each one, called successfully, writes exactly one
audit row and one outbox event, naming fields but never their values."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from support import ALL_WEEK, Person, day_at, rfc3339

from carebase.web.contract import Contract

CONTRACT = Contract.for_service("core")
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}

# Flows before or beside any tenant: they change sessions and mailed links, not records.
# Sign-in failures and token reuse are logged as security events instead.
NOT_AUDITED = {
    "register": "creates an unverified account with no organization; the mail is the record",
    "login": "a session, not a record",
    "refreshTokens": "a session, not a record",
    "logout": "a session, not a record",
    "requestEmailVerification": "mails a link; changes nothing",
    "confirmEmailVerification": "proves an address; no organization acts",
    "forgotPassword": "mails a link; changes nothing",
    "resetPassword": "a credential change before sign-in; ends sessions",
    "switchOrganization": "issues a token for another membership; changes nothing",
    "createVideoToken": "mints a short-lived join token that is never stored; changes nothing",
    "createTelemetrySession": "mints a short-lived session token, never stored; changes nothing",
    "queryCalendar": "a read whose filter travels in the body",
    "writeBlob": "stores an announced upload's bytes; `complete` (audited) makes them a file",
    "previewBroadcastTemplate": "renders a template for one recipient; nothing is stored or sent",
    "unsubscribeBroadcasts": "no signed-in caller: the service records"
    " broadcast_message.unsubscribed itself (test_broadcasts checks it)",
    "receiveProviderEvent": "a provider's signed receipt: the service records"
    " broadcast_message.receipt itself when it moves a message",
}
AUDITED = sorted(
    (op for op in CONTRACT.operations.values() if op.method in MUTATING and op.audit),
    key=lambda op: op.operation_id,
)


def test_every_mutating_operation_is_audited_or_exempt() -> None:
    mutating = {op.operation_id for op in CONTRACT.operations.values() if op.method in MUTATING}
    audited = {op.operation_id for op in AUDITED}
    assert mutating - audited == set(NOT_AUDITED), "declare x-audit on new mutating operations"
    assert not audited & set(NOT_AUDITED)


@dataclass
class World:
    """A fresh organization, its admin, and one of each resource to act on."""

    org: uuid.UUID
    admin: Person
    ids: dict[str, str]
    call: Callable[..., Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Multipart:
    """A `multipart/form-data` body (an upload)."""

    fields: dict[str, str]
    files: dict[str, tuple[str, bytes, str]]


Recipe = Callable[[World], tuple[str, str, dict[str, Any] | Multipart | None]]
PDF = b"%PDF-1.7\n%%EOF\n"
ANY = {"If-Match": "*"}

DOCUMENT_BODIES = {
    "reports": {"summary": "Better."},
    "prescriptions": {
        "items": [
            {
                "medication": "Ibuprofen 400 mg tablets",
                "dose": "1 tablet",
                "route": "oral",
                "frequency": "every 8 hours",
                "duration_days": 5,
                "quantity": 15,
            }
        ]
    },
}


def _document_recipes(base: str) -> dict[str, Recipe]:
    body = DOCUMENT_BODIES[base]
    return {
        "create{}": lambda w: (
            "POST",
            f"/v1/{base}",
            {
                "appointment_id": w.ids["appointment_id"],
                "patient_id": w.ids["booked_patient_id"],
                "title": "Week 1",
                "body": body,
            },
        ),
        "update{}": lambda w: (
            "PATCH",
            f"/v1/{base}/{w.ids[f'{base}_draft']}",
            {"title": "Week 2"},
        ),
        "delete{}": lambda w: ("DELETE", f"/v1/{base}/{w.ids[f'{base}_draft']}", None),
        "finalize{}": lambda w: ("POST", f"/v1/{base}/{w.ids[f'{base}_draft']}/finalize", None),
        "amend{}": lambda w: (
            "POST",
            f"/v1/{base}/{w.ids[f'{base}_final']}/amend",
            {"reason": "Wrong knee."},
        ),
        "mark{}EnteredInError": lambda w: (
            "POST",
            f"/v1/{base}/{w.ids[f'{base}_final']}/entered-in-error",
            {"reason": "Wrong patient."},
        ),
    }


def _webhook_recipes() -> dict[str, Recipe]:
    def endpoint(w: World, tail: str = "") -> str:
        return f"/v1/webhooks/endpoints/{w.ids['endpoint_id']}{tail}"

    return {
        "createWebhookEndpoint": lambda w: (
            "POST",
            "/v1/webhooks/endpoints",
            {"url": "https://hooks.audit.example.com/in", "event_types": ["patient.created"]},
        ),
        "updateWebhookEndpoint": lambda w: ("PATCH", endpoint(w), {"description": "Sync"}),
        "deleteWebhookEndpoint": lambda w: ("DELETE", endpoint(w), None),
        "rotateWebhookEndpointSecret": lambda w: ("POST", endpoint(w, "/rotate-secret"), None),
        "enableWebhookEndpoint": lambda w: ("POST", endpoint(w, "/enable"), None),
        "testWebhookEndpoint": lambda w: ("POST", endpoint(w, "/test"), None),
        "recoverWebhookEndpoint": lambda w: (
            "POST",
            endpoint(w, "/recover"),
            {"since": "2026-01-01T00:00:00Z"},
        ),
        "redeliverWebhookDelivery": lambda w: (
            "POST",
            endpoint(w, f"/deliveries/{w.ids['delivery_id']}/redeliver"),
            None,
        ),
    }


def _broadcast_recipes() -> dict[str, Recipe]:
    campaign = "/v1/broadcasts/campaigns/{}"
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    return {
        "createBroadcastTemplate": lambda w: (
            "POST",
            "/v1/broadcasts/templates",
            {"name": "New", "channel": "sms", "body": "Hello"},
        ),
        "updateBroadcastTemplate": lambda w: (
            "PATCH",
            f"/v1/broadcasts/templates/{w.ids['broadcast_template_id']}",
            {"name": "Renamed"},
        ),
        "deleteBroadcastTemplate": lambda w: (
            "DELETE",
            f"/v1/broadcasts/templates/{w.ids['spare_broadcast_template_id']}",
            None,
        ),
        "addBroadcastRecipient": lambda w: (
            "POST",
            "/v1/broadcasts/recipients",
            {"list_name": "news", "patient_id": w.ids["patient_id"]},
        ),
        "deleteBroadcastRecipient": lambda w: (
            "DELETE",
            f"/v1/broadcasts/recipients/{w.ids['recipient_id']}",
            None,
        ),
        "importBroadcastRecipients": lambda w: (
            "POST",
            "/v1/broadcasts/recipients/import",
            Multipart(
                {"list_name": "news"}, {"file": ("a.csv", b"email\na@example.com\n", "text/csv")}
            ),
        ),
        "createBroadcastCampaign": lambda w: (
            "POST",
            "/v1/broadcasts/campaigns",
            {
                "name": "New",
                "template_id": w.ids["broadcast_template_id"],
                "audience": {"recipient_lists": ["news"]},
            },
        ),
        "updateBroadcastCampaign": lambda w: (
            "PATCH",
            campaign.format(w.ids["campaign_id"]),
            {"name": "Renamed"},
        ),
        "deleteBroadcastCampaign": lambda w: (
            "DELETE",
            campaign.format(w.ids["campaign_id"]),
            None,
        ),
        "scheduleBroadcastCampaign": lambda w: (
            "POST",
            campaign.format(w.ids["campaign_id"]) + "/schedule",
            {"at": rfc3339(soon)},
        ),
        "sendBroadcastCampaign": lambda w: (
            "POST",
            campaign.format(w.ids["campaign_id"]) + "/send",
            None,
        ),
        "cancelBroadcastCampaign": lambda w: (
            "POST",
            campaign.format(w.ids["campaign_id"]) + "/cancel",
            None,
        ),
        "setMessagePreferences": lambda w: (
            "PUT",
            f"/v1/patients/{w.ids['patient_id']}/message-preferences",
            {"sms": False},
        ),
    }


RECIPES: dict[str, Recipe] = {
    "createOrganization": lambda w: (
        "POST",
        "/v1/organizations",
        {"name": "New", "slug": f"n-{uuid.uuid4().hex[:10]}"},
    ),
    "updateOrganization": lambda w: ("PATCH", f"/v1/organizations/{w.org}", {"name": "Renamed"}),
    "addMember": lambda w: (
        "POST",
        f"/v1/organizations/{w.org}/members",
        {"email": f"m-{uuid.uuid4().hex[:8]}@example.com", "role": "staff"},
    ),
    "updateMember": lambda w: (
        "PATCH",
        f"/v1/organizations/{w.org}/members/{w.ids['user_id']}",
        {"role": "specialist"},
    ),
    "removeMember": lambda w: (
        "DELETE",
        f"/v1/organizations/{w.org}/members/{w.ids['patient_user_id']}",
        None,
    ),
    "createApiKey": lambda w: (
        "POST",
        f"/v1/organizations/{w.org}/api-keys",
        {"name": "sync", "role": "staff"},
    ),
    "revokeApiKey": lambda w: (
        "DELETE",
        f"/v1/organizations/{w.org}/api-keys/{w.ids['api_key_id']}",
        None,
    ),
    "updateMe": lambda w: ("PATCH", "/v1/me", {"display_name": "Dana"}),
    "createSpecialty": lambda w: ("POST", "/v1/specialties", {"name": "Speech therapy"}),
    "updateSpecialty": lambda w: (
        "PATCH",
        f"/v1/specialties/{w.ids['specialty_id']}",
        {"description": "New words"},
    ),
    "deleteSpecialty": lambda w: ("DELETE", f"/v1/specialties/{w.ids['spare_specialty_id']}", None),
    "createSpecialist": lambda w: (
        "POST",
        "/v1/specialists",
        {"user_id": str(w.admin.user_id), "display_name": "Admin Too"},
    ),
    "updateSpecialist": lambda w: (
        "PATCH",
        f"/v1/specialists/{w.ids['specialist_id']}",
        {"title": "Lead", "specialty_ids": [w.ids["specialty_id"]]},
    ),
    "deleteSpecialist": lambda w: ("DELETE", f"/v1/specialists/{w.ids['specialist_id']}", None),
    "updateSpecialistProfile": lambda w: (
        "PUT",
        f"/v1/specialists/{w.ids['specialist_id']}/profile",
        {"values": {"languages": ["en"]}},
    ),
    "createCustomField": lambda w: (
        "POST",
        "/v1/custom-fields",
        {"entity_type": "patient", "key": "allergies", "label": "Allergies", "type": "text"},
    ),
    "updateCustomField": lambda w: (
        "PATCH",
        f"/v1/custom-fields/{w.ids['field_id']}",
        {"label": "Pain (0-10)"},
    ),
    "deleteCustomField": lambda w: ("DELETE", f"/v1/custom-fields/{w.ids['field_id']}", None),
    "createPatient": lambda w: ("POST", "/v1/patients", {"given_name": "A", "family_name": "B"}),
    "onboardPatient": lambda w: (
        "POST",
        "/v1/patients/onboard",
        {"email": f"o-{uuid.uuid4().hex[:8]}@example.com", "given_name": "O", "family_name": "P"},
    ),
    "updatePatient": lambda w: (
        "PATCH",
        f"/v1/patients/{w.ids['patient_id']}",
        {"phone": "+1 555 0101"},
    ),
    "deletePatient": lambda w: ("DELETE", f"/v1/patients/{w.ids['patient_id']}", None),
    "updatePatientProfile": lambda w: (
        "PUT",
        f"/v1/patients/{w.ids['patient_id']}/profile",
        {"values": {"pain_score": 4}},
    ),
    "impersonatePatient": lambda w: (
        "POST",
        f"/v1/patients/{w.ids['patient_id']}/impersonate",
        None,
    ),
    "replaceAvailability": lambda w: (
        "PUT",
        f"/v1/specialists/{w.ids['booked_specialist_id']}/availability",
        {"time_zone": "Europe/Zagreb", "weekly": ALL_WEEK},
    ),
    "createAppointmentTemplate": lambda w: (
        "POST",
        "/v1/appointment-templates",
        {"slug": "follow-up", "title": "Follow-up", "duration_minutes": 30},
    ),
    "updateAppointmentTemplate": lambda w: (
        "PATCH",
        f"/v1/appointment-templates/{w.ids['template_id']}",
        {"duration_minutes": 60},
    ),
    "deleteAppointmentTemplate": lambda w: (
        "DELETE",
        f"/v1/appointment-templates/{w.ids['template_id']}",
        None,
    ),
    "createAppointment": lambda w: ("POST", "/v1/appointments", _booking(w, day_at(3, 10))),
    "createAppointmentFromTemplate": lambda w: (
        "POST",
        "/v1/appointments/from-template",
        {
            "template_id": w.ids["template_id"],
            "specialist_id": w.ids["booked_specialist_id"],
            "patient_id": w.ids["booked_patient_id"],
            "starts_at": rfc3339(day_at(3, 12)),
        },
    ),
    "updateAppointment": lambda w: (
        "PATCH",
        f"/v1/appointments/{w.ids['appointment_id']}",
        {"title": "Week 3"},
    ),
    "deleteAppointment": lambda w: ("DELETE", f"/v1/appointments/{w.ids['held_id']}", None),
    "rescheduleAppointment": lambda w: (
        "POST",
        f"/v1/appointments/{w.ids['appointment_id']}/reschedule",
        {"starts_at": rfc3339(day_at(3, 14)), "reason": "Asked for later."},
    ),
    "cancelAppointment": lambda w: (
        "POST",
        f"/v1/appointments/{w.ids['appointment_id']}/cancel",
        {"reason": "Unwell."},
    ),
    "bookAppointment": lambda w: ("POST", f"/v1/appointments/{w.ids['held_id']}/book", None),
    "acceptAppointment": lambda w: ("POST", f"/v1/appointments/{w.ids['booked_id']}/accept", None),
    "confirmAppointment": lambda w: (
        "POST",
        f"/v1/appointments/{w.ids['appointment_id']}/confirm",
        {"reason": "Called."},
    ),
    "startAppointment": lambda w: (
        "POST",
        f"/v1/appointments/{w.ids['appointment_id']}/start",
        None,
    ),
    "completeAppointment": lambda w: (
        "POST",
        f"/v1/appointments/{w.ids['started_id']}/complete",
        None,
    ),
    "markAppointmentNoShow": lambda w: (
        "POST",
        f"/v1/appointments/{w.ids['late_id']}/no-show",
        None,
    ),
    "markAppointmentEnteredInError": lambda w: (
        "POST",
        f"/v1/appointments/{w.ids['appointment_id']}/entered-in-error",
        {"reason": "Wrong patient."},
    ),
    "createCalendarFeed": lambda w: (
        "POST",
        f"/v1/specialists/{w.ids['booked_specialist_id']}/calendar-feeds",
        {"include_patient_names": False},
    ),
    "attachAppointmentForms": lambda w: (
        "POST",
        f"/v1/appointments/{w.ids['appointment_id']}/attach-forms",
        {"form_template_ids": [w.ids["form_template_id"]]},
    ),
    "createFormTemplate": lambda w: (
        "POST",
        "/v1/form-templates",
        {"title": "Consent", "items": FORM_ITEMS},
    ),
    "updateFormTemplate": lambda w: (
        "PUT",
        f"/v1/form-templates/{w.ids['form_template_id']}",
        {"title": "Intake v2", "items": FORM_ITEMS},
    ),
    "deleteFormTemplate": lambda w: (
        "DELETE",
        f"/v1/form-templates/{w.ids['draft_form_template_id']}",
        None,
    ),
    "publishFormTemplate": lambda w: (
        "POST",
        f"/v1/form-templates/{w.ids['draft_form_template_id']}/publish",
        None,
    ),
    "createForm": lambda w: (
        "POST",
        "/v1/forms",
        {"template_id": w.ids["form_template_id"], "patient_id": w.ids["booked_patient_id"]},
    ),
    "updateForm": lambda w: ("PATCH", f"/v1/forms/{w.ids['form_id']}", {"values": {"pain": 3}}),
    "deleteForm": lambda w: ("DELETE", f"/v1/forms/{w.ids['form_id']}", None),
    "submitForm": lambda w: ("POST", f"/v1/forms/{w.ids['form_id']}/submit", None),
    "signForm": lambda w: (
        "POST",
        f"/v1/forms/{w.ids['completed_form_id']}/sign",
        {"meaning": "reviewed"},
    ),
    "amendForm": lambda w: (
        "POST",
        f"/v1/forms/{w.ids['signed_form_id']}/amend",
        {"reason": "Wrong knee."},
    ),
    **{
        name.format(noun): recipe
        for noun, base in (("Report", "reports"), ("Prescription", "prescriptions"))
        for name, recipe in _document_recipes(base).items()
    },
    "revokeCalendarFeed": lambda w: (
        "DELETE",
        f"/v1/specialists/{w.ids['booked_specialist_id']}/calendar-feeds/{w.ids['feed_id']}",
        None,
    ),
    "uploadAttachment": lambda w: ("POST", "/v1/attachments", _upload(w)),
    "startAttachmentUpload": lambda w: ("POST", "/v1/attachments/uploads", _announced(w)),
    "completeAttachmentUpload": lambda w: (
        "POST",
        f"/v1/attachments/{w.ids['pending_attachment_id']}/complete",
        None,
    ),
    "deleteAttachment": lambda w: ("DELETE", f"/v1/attachments/{w.ids['attachment_id']}", None),
    **_webhook_recipes(),
    **_broadcast_recipes(),
    "exportCsv": lambda w: ("POST", "/v1/export/csv", {"entity": "patients"}),
    "createGdprRequest": lambda w: (
        "POST",
        "/v1/gdpr/requests",
        {"kind": "export", "patient_id": w.ids["patient_id"], "reason": "Asked in writing."},
    ),
    "approveGdprRequest": lambda w: (
        "POST",
        f"/v1/gdpr/requests/{w.ids['gdpr_request_id']}/approve",
        None,
    ),
    "rejectGdprRequest": lambda w: (
        "POST",
        f"/v1/gdpr/requests/{w.ids['gdpr_request_id']}/reject",
        {"reason": "Identity not verified."},
    ),
    "eraseGdprUser": lambda w: ("DELETE", f"/v1/gdpr/users/{w.ids['patient_user_id']}", None),
    "anonymizeGdprUser": lambda w: (
        "POST",
        f"/v1/gdpr/users/{w.ids['patient_user_id']}/anonymize",
        None,
    ),
    "createSegment": lambda w: (
        "POST",
        "/v1/segments",
        {"name": "Active", "kind": "dynamic", "rules": ACTIVE_PATIENTS},
    ),
    "updateSegment": lambda w: (
        "PATCH",
        f"/v1/segments/{w.ids['dynamic_segment_id']}",
        {"name": "Active patients"},
    ),
    "deleteSegment": lambda w: ("DELETE", f"/v1/segments/{w.ids['static_segment_id']}", None),
    "evaluateSegment": lambda w: (
        "POST",
        f"/v1/segments/{w.ids['dynamic_segment_id']}/evaluate",
        None,
    ),
    "addSegmentMembers": lambda w: (
        "POST",
        f"/v1/segments/{w.ids['static_segment_id']}/members",
        {"patient_ids": [w.ids["patient_id"]]},
    ),
    "removeSegmentMembers": lambda w: (
        "DELETE",
        f"/v1/segments/{w.ids['static_segment_id']}/members?patient_id={w.ids['patient_id']}",
        None,
    ),
}
ACTIVE_PATIENTS = {
    "combinator": "and",
    "rules": [{"field": "status", "operator": "=", "value": "active"}],
}


FORM_ITEMS = [{"link_id": "pain", "text": "Pain", "type": "integer", "min": 0, "max": 10}]


def _booking(w: World, start: dt.datetime, **extra: Any) -> dict[str, Any]:
    return {
        "specialist_id": w.ids["booked_specialist_id"],
        "patient_id": w.ids["booked_patient_id"],
        "title": "Session",
        "starts_at": rfc3339(start),
        "duration_minutes": 60,
        **extra,
    }


def test_every_audited_operation_has_a_recipe() -> None:
    assert {op.operation_id for op in AUDITED} == set(RECIPES)


@pytest.fixture
async def world(
    client: httpx.AsyncClient,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> World:
    org = new_org("Audited Clinic")
    admin = person(org, "admin", superadmin=True)
    staff, patient = person(org, "staff"), person(org, "patient")

    async def call(method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {**admin.auth, **(ANY if method in MUTATING else {})}
        if isinstance(body, Multipart):
            return await client.request(
                method, path, headers=headers, data=body.fields, files=body.files
            )
        return await client.request(method, path, headers=headers, json=body)

    async def made(method: str, path: str, body: Any) -> str:
        answer = await call(method, path, body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    ids = {"user_id": str(staff.user_id), "patient_user_id": str(patient.user_id)}
    ids["specialty_id"] = await made("POST", "/v1/specialties", {"name": "Physiotherapy"})
    ids["spare_specialty_id"] = await made("POST", "/v1/specialties", {"name": "Spare"})
    ids["specialist_id"] = await made(
        "POST", "/v1/specialists", {"user_id": str(staff.user_id), "display_name": "Sam"}
    )
    for entity, key, kind in (
        ("patient", "pain_score", "number"),
        ("specialist", "languages", "multi_select"),
    ):
        body: dict[str, Any] = {"entity_type": entity, "key": key, "label": key, "type": kind}
        if kind == "multi_select":
            body["options"] = ["en", "hr"]
        ids["field_id"] = await made("POST", "/v1/custom-fields", body)
    ids["patient_id"] = await made("POST", "/v1/patients", {"given_name": "P", "family_name": "Q"})
    admin_conn.execute(
        "UPDATE patients.patients SET user_id = %s WHERE id = %s",
        (patient.user_id, ids["patient_id"]),
    )
    key = await call("POST", f"/v1/organizations/{org}/api-keys", {"name": "k", "role": "staff"})
    ids["api_key_id"] = str(key.json()["id"])
    world = World(org, admin, ids, call)
    await _scheduling(world, person, admin_conn, made)
    await _forms(world, made)
    await _documents(world, made)
    await _attachments(world, made, client)
    await _webhooks(world)
    ids["dynamic_segment_id"] = await made(
        "POST", "/v1/segments", {"name": "Dynamic", "kind": "dynamic", "rules": ACTIVE_PATIENTS}
    )
    ids["static_segment_id"] = await made(
        "POST", "/v1/segments", {"name": "Static", "kind": "static"}
    )
    await _broadcasts(world, made)
    received = await call(
        "POST",
        "/v1/gdpr/requests",
        {"kind": "restrict", "patient_id": ids["patient_id"], "reason": "Asked in writing."},
    )
    assert received.status_code == 202, received.text
    ids["gdpr_request_id"] = str(received.json()["id"])
    return world


async def _broadcasts(w: World, made: Callable[..., Awaitable[str]]) -> None:
    """A template, a second one no campaign uses, a draft campaign and a list's recipient."""
    sms = {"channel": "sms", "body": "Hi {{patient.given_name}}"}
    w.ids["broadcast_template_id"] = await made(
        "POST", "/v1/broadcasts/templates", {"name": "Used", **sms}
    )
    w.ids["spare_broadcast_template_id"] = await made(
        "POST", "/v1/broadcasts/templates", {"name": "Spare", **sms}
    )
    w.ids["campaign_id"] = await made(
        "POST",
        "/v1/broadcasts/campaigns",
        {"name": "Draft", "template_id": w.ids["broadcast_template_id"],
         "audience": {"segment_ids": [w.ids["static_segment_id"]]}},
    )  # fmt: skip
    w.ids["recipient_id"] = await made(
        "POST", "/v1/broadcasts/recipients", {"list_name": "news", "email": "r@example.com"}
    )


async def _webhooks(w: World) -> None:
    made = await w.call("POST", "/v1/webhooks/endpoints", {"url": "https://hooks.example.com/a"})
    assert made.status_code == 201, made.text
    w.ids["endpoint_id"] = str(made.json()["endpoint"]["id"])
    tested = await w.call("POST", f"/v1/webhooks/endpoints/{w.ids['endpoint_id']}/test")
    assert tested.status_code == 202, tested.text
    w.ids["delivery_id"] = str(tested.json()["id"])


async def _attachments(
    w: World, made: Callable[..., Awaitable[str]], client: httpx.AsyncClient
) -> None:
    """A file to delete, and an announced upload whose bytes arrived, to complete."""
    w.ids["attachment_id"] = await made("POST", "/v1/attachments", _upload(w))
    started = await w.call("POST", "/v1/attachments/uploads", _announced(w))
    assert started.status_code == 201, started.text
    w.ids["pending_attachment_id"] = str(started.json()["attachment"]["id"])
    url = httpx.URL(started.json()["upload"]["url"])
    stored = await client.put(
        url.raw_path.decode(), content=PDF, headers=started.json()["upload"]["headers"]
    )
    assert stored.status_code == 204, stored.text


def _upload(w: World) -> Multipart:
    return Multipart(
        {"owner_type": "patient", "owner_id": w.ids["patient_id"]},
        {"file": ("scan.pdf", PDF, "application/pdf")},
    )


def _announced(w: World) -> dict[str, Any]:
    return {
        "owner_type": "patient",
        "owner_id": w.ids["patient_id"],
        "filename": "scan.pdf",
        "size_bytes": len(PDF),
        "sha256": hashlib.sha256(PDF).hexdigest(),
    }


async def _documents(w: World, made: Callable[..., Awaitable[str]]) -> None:
    """A draft and a final report and prescription on the booked appointment."""
    for base, body in DOCUMENT_BODIES.items():
        new = {
            "appointment_id": w.ids["appointment_id"],
            "patient_id": w.ids["booked_patient_id"],
            "title": "Week 1",
            "body": body,
        }
        w.ids[f"{base}_draft"] = await made("POST", f"/v1/{base}", new)
        w.ids[f"{base}_final"] = await made("POST", f"/v1/{base}", new)
        done = await w.call("POST", f"/v1/{base}/{w.ids[f'{base}_final']}/finalize")
        assert done.status_code == 200, done.text


async def _forms(w: World, made: Callable[..., Awaitable[str]]) -> None:
    """A published form template, one with a draft only, and forms in each state."""
    ids = w.ids
    ids["form_template_id"] = await made(
        "POST", "/v1/form-templates", {"title": "Intake", "items": FORM_ITEMS}
    )
    ids["draft_form_template_id"] = await made(
        "POST", "/v1/form-templates", {"title": "Draft", "items": FORM_ITEMS}
    )
    published = await w.call("POST", f"/v1/form-templates/{ids['form_template_id']}/publish")
    assert published.status_code == 201, published.text
    new = {"template_id": ids["form_template_id"], "patient_id": ids["booked_patient_id"]}
    ids["form_id"] = await made("POST", "/v1/forms", new)
    for key, steps in (("completed_form_id", ("submit",)), ("signed_form_id", ("submit", "sign"))):
        ids[key] = await made("POST", "/v1/forms", {**new, "values": {"pain": 2}})
        for step in steps:
            body = {"meaning": "reviewed"} if step == "sign" else None
            done = await w.call("POST", f"/v1/forms/{ids[key]}/{step}", body)
            assert done.status_code == 200, done.text


async def _scheduling(
    w: World,
    person: Callable[..., Person],
    admin_conn: psycopg.Connection[tuple[object, ...]],
    made: Callable[..., Awaitable[str]],
) -> None:
    """A specialist who works every hour, a patient, a template, a calendar feed and
    appointments in the states the transitions start from."""
    doctor = person(w.org, "specialist")
    ids = w.ids
    ids["booked_specialist_id"] = await made(
        "POST", "/v1/specialists", {"user_id": str(doctor.user_id), "display_name": "Dr B"}
    )
    ids["booked_patient_id"] = await made(
        "POST", "/v1/patients", {"given_name": "R", "family_name": "S"}
    )
    set_hours = await w.call(
        "PUT",
        f"/v1/specialists/{ids['booked_specialist_id']}/availability",
        {"time_zone": "UTC", "weekly": ALL_WEEK},
    )
    assert set_hours.status_code == 200, set_hours.text
    ids["template_id"] = await made(
        "POST",
        "/v1/appointment-templates",
        {"slug": "assess", "title": "A", "duration_minutes": 45},
    )
    ids["appointment_id"] = await made("POST", "/v1/appointments", _booking(w, day_at(2, 10)))
    ids["held_id"] = await made("POST", "/v1/appointments", _booking(w, day_at(2, 12), hold=True))
    ids["booked_id"] = await made(
        "POST", "/v1/appointments", _booking(w, day_at(2, 14), requires_confirmation=True)
    )
    ids["started_id"] = await made("POST", "/v1/appointments", _booking(w, day_at(2, 16)))
    ids["late_id"] = await made("POST", "/v1/appointments", _booking(w, day_at(2, 18)))
    for key, status, minutes in (("started_id", "in_progress", 5), ("late_id", "upcoming", 125)):
        admin_conn.execute(  # begun `minutes` ago
            "UPDATE scheduling.appointments SET status = %(status)s,"
            " starts_at = now() - %(ago)s, ends_at = now() - %(ago)s + interval '1 hour',"
            " blocked = tstzrange(now() - %(ago)s, now() - %(ago)s + interval '1 hour')"
            " WHERE id = %(id)s",
            {"status": status, "ago": dt.timedelta(minutes=minutes), "id": ids[key]},
        )
    feed = await w.call("POST", f"/v1/specialists/{ids['booked_specialist_id']}/calendar-feeds", {})
    ids["feed_id"] = str(feed.json()["id"])


def _counts(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[int, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM audit.events), (SELECT count(*) FROM audit.outbox)"
    ).fetchone()
    assert row is not None
    return int(str(row[0])), int(str(row[1]))


@pytest.mark.parametrize("op", AUDITED, ids=lambda op: op.operation_id)
async def test_one_audit_row_and_one_event_per_change(
    world: World, admin_conn: psycopg.Connection[tuple[object, ...]], op: Any
) -> None:
    method, path, body = RECIPES[op.operation_id](world)
    assert method == op.method
    before = _counts(admin_conn)
    answer = await world.call(method, path, body)
    assert answer.status_code < 300, answer.text
    assert _counts(admin_conn) == (before[0] + 1, before[1] + 1)
    event = admin_conn.execute(
        "SELECT e.action, e.actor_user_id, e.request_id, host(e.ip), e.changed_fields,"
        "       o.payload->>'event_id' = e.id::text"
        "  FROM audit.events e JOIN audit.outbox o ON o.payload->>'event_id' = e.id::text"
        " ORDER BY o.id DESC LIMIT 1"
    ).fetchone()
    assert event is not None
    assert event[0] == op.audit
    assert event[1] == world.admin.user_id
    assert event[2] == answer.headers["X-Request-ID"]
    assert event[3] == "203.0.113.7"
    if isinstance(body, dict) and body:
        flat = str(body)
        assert all(isinstance(name, str) and len(name) < 64 for name in event[4])  # type: ignore[union-attr]
        assert not {v for v in body.values() if isinstance(v, str) and len(v) > 3} & set(
            event[4]
        ), flat  # type: ignore[arg-type]


async def test_admins_read_the_trail_with_filters(
    world: World, client: httpx.AsyncClient, person: Callable[..., Person]
) -> None:
    changed = await world.call(
        "PATCH", f"/v1/patients/{world.ids['patient_id']}", {"notes": "secret"}
    )
    assert changed.status_code == 200
    trail = await client.get(
        "/v1/audit-log",
        headers=world.admin.auth,
        params={"entity_id": world.ids["patient_id"], "action": "patient.updated"},
    )
    assert trail.status_code == 200
    events = trail.json()["data"]
    assert [e["changed_fields"] for e in events] == [["notes"]]
    assert "secret" not in trail.text
    staff = person(world.org, "staff")
    assert (await client.get("/v1/audit-log", headers=staff.auth)).status_code == 403
