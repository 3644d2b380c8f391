"""Roles and the permissions they hold: the one table `x-permission` is checked against.

`superadmin` is a platform flag on the user, not a membership: it adds the platform
permissions and nothing inside an organization the superadmin is not a member of.
"""

from __future__ import annotations

from collections.abc import Mapping

from carebase.principal import Principal

ORGANIZATION_ROLES = ("admin", "specialist", "staff", "patient")
API_KEY_ROLES = ("admin", "specialist", "staff")

# Every signed-in person may read and change their own profile, list their organizations
# and look one up by slug. API keys act for an organization, not a person.
SELF = frozenset({"profile:read", "profile:write", "organizations:lookup"})
PLATFORM = frozenset({"organizations:create"})

_CLINICAL_READ = {"patients:read", "specialists:read", "specialties:read", "custom_fields:read"}
# Everyone in a clinic reads its offer and its free times; a patient's own appointments only
# (row-level security narrows what `appointments:*` and `calendar:read` show them).
_SCHEDULE_READ = {"availability:read", "appointment_templates:read", "calendar:read"}
_BOOKING = {"appointments:read", "appointments:write"}
_CLINIC_SCHEDULING = {*_SCHEDULE_READ, *_BOOKING, "availability:write", "appointments:manage"}
# Everyone fills and signs forms (row-level security narrows a patient to their own, and a
# template names the roles that may sign); the clinic designs them.
_FORMS = {"form_templates:read", "forms:read", "forms:write", "forms:sign"}
_CLINIC_FORMS = {*_FORMS, "form_templates:write"}
# Reports and prescriptions: the clinic reads them (row-level security shows a patient their
# own final ones); clinicians write them; an admin withdraws one entered in error.
# Attachments: everyone reads and uploads; row-level security narrows a patient to the files
# of their own record, forms and final documents, and their uploads to their record and forms.
_ATTACHMENTS = {"attachments:read", "attachments:write"}
# Telemetry: every member sends analytics and keeps their own consent (row-level security
# shows a person only their own records; admins see the organization's).
_TELEMETRY = {"analytics:write", "media:write", "consents:read", "consents:write"}
# The clinic reads its dashboards; staff activity is for admins.
_DASHBOARDS = {"dashboards:read"}
# Segments group patients for follow-ups and campaigns: the clinic reads them; admins and
# staff (who run the campaigns) change them. Patients see none.
_SEGMENTS = {"segments:read", "segments:write"}
# Broadcasts: admins and staff run campaigns; specialists read them (a patient keeps their
# own channel preferences through `patients:*`).
_BROADCASTS = {"broadcasts:read", "broadcasts:write"}
# CSV export: the clinic's staff roles; health data columns only for admins.
_EXPORT = {"export:run"}

ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "admin": frozenset(
        {
            "organizations:read",
            "organizations:write",
            "members:read",
            "members:write",
            "api_keys:read",
            "api_keys:write",
            "patients:write",
            "patients:manage",
            "patients:impersonate",
            "specialists:write",
            "specialties:write",
            "custom_fields:write",
            "audit:read",
            "appointment_templates:write",
            "appointments:admin",
            "documents:read",
            "documents:write",
            "documents:admin",
            "appointments:join",
            "calendar_feeds:write",
            "webhooks:read",
            "webhooks:write",
            "dashboards:staff",
            "security_events:read",
            "privacy:manage",
            "export:phi",
            "gdpr:manage",
            *_EXPORT,
            *_SEGMENTS,
            *_BROADCASTS,
            *_CLINICAL_READ,
            *_CLINIC_SCHEDULING,
            *_CLINIC_FORMS,
            *_DASHBOARDS,
            *_ATTACHMENTS,
            *_TELEMETRY,
        }
    ),
    # A specialist joins their own video sessions and subscribes to their own calendar.
    "specialist": frozenset(
        {
            "members:read",
            "patients:write",
            "patients:manage",
            "appointments:join",
            "calendar_feeds:write",
            "documents:read",
            "documents:write",
            "segments:read",
            "broadcasts:read",
            *_EXPORT,
            *_CLINICAL_READ,
            *_CLINIC_SCHEDULING,
            *_CLINIC_FORMS,
            *_DASHBOARDS,
            *_ATTACHMENTS,
            *_TELEMETRY,
        }
    ),
    "staff": frozenset(
        {
            "members:read",
            "patients:write",
            "patients:manage",
            "appointment_templates:write",
            "documents:read",
            *_SEGMENTS,
            *_BROADCASTS,
            *_EXPORT,
            *_CLINICAL_READ,
            *_CLINIC_SCHEDULING,
            *_CLINIC_FORMS,
            *_DASHBOARDS,
            *_ATTACHMENTS,
            *_TELEMETRY,
        }
    ),
    # Row-level security narrows a patient to their own record: they read and edit it (not
    # its status), and read the directory and the field library their profile uses.
    "patient": frozenset(
        {
            "patients:read",
            "patients:write",
            "specialists:read",
            "specialties:read",
            "custom_fields:read",
            "appointments:join",
            *_SCHEDULE_READ,
            *_BOOKING,
            *_FORMS,
            "documents:read",
            *_ATTACHMENTS,
            *_TELEMETRY,
        }
    ),
    # Core's relay calling telemetry with the service credential: ingest only…
    # …and core's GDPR worker: a subject's telemetry exported or erased.
    "service": frozenset({"audit:ingest", "security_events:ingest", "privacy:subjects"}),
    # A telemetry session token (core mints it per appointment): that session's frames only.
    "telemetry_session": frozenset({"pose:write"}),
}

KNOWN = frozenset().union(SELF, PLATFORM, *ROLE_PERMISSIONS.values())


def permissions_of(principal: Principal) -> frozenset[str]:
    granted: frozenset[str] = ROLE_PERMISSIONS.get(principal.role or "", frozenset())
    if principal.user_id is not None:
        granted |= SELF
    if principal.is_superadmin:
        granted |= PLATFORM
    return granted


def allows(principal: Principal, permission: str) -> bool:
    return permission in permissions_of(principal)
