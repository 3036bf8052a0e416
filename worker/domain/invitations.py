"""Inviting recipients who are not users yet (SPEC 3.2): Pending users and invitations."""

from __future__ import annotations

from urllib.parse import quote

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from worker.domain.drafts import ADDRESSEE_COLUMNS, Addressee, Sender
from worker.domain.emails import OutboxWriter
from worker.domain.rules import SendContext
from worker.domain.secrets import hash_password, new_token
from worker.models import Group, Invitation, User, UserState, new_guid, table

INVITEE_GROUP = "default"


def _invitee_group_id(session: Session, sender: Sender) -> int:
    # Invited people join the `default` group, not the sender's package; a deployment
    # without one puts them in the sender's group.
    group_id = session.scalar(select(Group.id).where(Group.name == INVITEE_GROUP))
    return group_id if group_id is not None else sender.group.id


def invite_new_users(ctx: SendContext, *, outbox: OutboxWriter) -> dict[str, Addressee]:
    """Create a Pending user, an invitation and an invitation email per new address.

    The registration token and the CRA code are stored only as hashes; the token reaches
    the invitee only inside the (sealed) invitation email. Returns the new users by email.
    """
    if not ctx.new_addresses:
        return {}
    session = ctx.session
    group_id = _invitee_group_id(session, ctx.sender)
    created = session.connection().execute(
        # Mapped back by email: any order will do.
        insert(table(User)).returning(*ADDRESSEE_COLUMNS),
        [
            {
                "guid": new_guid(),
                "email": a.email,
                "group_id": group_id,
                "state": UserState.PENDING,
                "created_at": ctx.now,
            }
            for a in ctx.new_addresses
        ],
    )
    users = {row.email: Addressee(*row) for row in created}
    cra_hash = hash_password(ctx.cra_code) if ctx.cra_code else None
    base_url = outbox.settings.public_base_url.rstrip("/")
    invitations = []
    emails = []
    for user in users.values():
        token = new_token()
        invitations.append(
            {
                "user_id": user.id,
                "invited_by_id": ctx.sender.id,
                "message_id": ctx.message.id,
                "token_hash": outbox.keys.token_digest(token),
                "cra_code_hash": cra_hash,
                "created_at": ctx.now,
            }
        )
        emails.append((user, f"{base_url}/register?token={quote(token)}"))
    session.execute(insert(Invitation), invitations)
    outbox.queue_invitations(ctx.message, emails, cra_required=cra_hash is not None)
    return users
