"""The storage SCP: admission of associations and the C-STORE handler (PS3.4 Annex B).

The handler is as short as storescp's: turn the event into a ReceivedObject, run the pipeline
(de-identify, spool), map the outcome to a StoreStatus. Anything that goes wrong before the
object is durably spooled answers a failure status (fail closed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from io import BytesIO
from typing import Any, cast

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicom_proxy import audit
from dicom_proxy.config import NodeConfig
from dicom_proxy.deidentify import Engine
from dicom_proxy.limits import ReceiveLimits
from dicom_proxy.models import ReceivedObject, Refused
from dicom_proxy.spool import Spool, SpoolFull
from dicom_proxy.status import StoreStatus
from dicom_proxy.tcp import set_tcp_nodelay

log = logging.getLogger(__name__)


class StorePipeline:
    """De-identify one received object and spool it durably. The engine can be swapped (SIGHUP)."""

    def __init__(self, engine: Engine, spool: Spool) -> None:
        self.engine = engine
        self.spool = spool

    def store(self, received: ReceivedObject) -> StoreStatus:
        engine = self.engine  # one engine for the whole object, even if a reload happens now
        try:
            self.spool.check_capacity(len(received.dataset_bytes))
            result = engine.deidentify_received(received)
            self.spool.store(result)
        except SpoolFull as exc:
            audit.record("refused", status=int(StoreStatus.OUT_OF_RESOURCES), reason=str(exc))
            return StoreStatus.OUT_OF_RESOURCES
        except Refused as exc:
            audit.record("refused", status=int(exc.status), reason=exc.reason)
            return exc.status
        except OSError as exc:
            # Disk trouble while spooling: the sender should try again later.
            audit.record("refused", status=int(StoreStatus.OUT_OF_RESOURCES), reason=f"spool write failed ({exc.strerror})")
            return StoreStatus.OUT_OF_RESOURCES
        except Exception as exc:  # fail closed on anything unexpected
            # Type only: a traceback or message may quote a value of the object.
            log.error("unexpected error while processing an object (%s)", type(exc).__name__)
            audit.record("refused", status=int(StoreStatus.PROCESSING_FAILURE), reason=type(exc).__name__)
            return StoreStatus.PROCESSING_FAILURE
        audit.record(
            "stored",
            sop_instance_uid=result.sop_instance_uid,
            study_instance_uid=result.study_instance_uid,
            bytes=result.size,
        )
        return StoreStatus.SUCCESS


def handle_store(pipeline: StorePipeline) -> Callable[[evt.Event], int]:
    def handler(event: evt.Event) -> int:
        try:
            request = cast(C_STORE, event.request)
            received = ReceivedObject(
                dataset_bytes=cast(BytesIO, request.DataSet).getvalue(),
                transfer_syntax_uid=str(event.context.transfer_syntax),
                affected_sop_class_uid=str(request.AffectedSOPClassUID),
                calling_ae_title=str(event.assoc.requestor.ae_title),
            )
        except Exception:
            return int(StoreStatus.CANNOT_PARSE)
        return int(pipeline.store(received))

    return handler


def handle_echo(event: evt.Event) -> int:
    return 0x0000


def release_unassociated(event: evt.Event) -> None:
    """A connection that closes before an association was established frees its slot now.

    pynetdicom's acceptor otherwise waits the full ACSE timeout for an A-ASSOCIATE-RQ that
    cannot come; a port scanner could hold every slot (max_associations) that long. Waking the
    wait with None takes pynetdicom's own timeout path, which kills the association cleanly.
    """
    assoc = event.assoc
    if assoc.is_acceptor and not assoc.is_established and assoc.requestor.primitive is None:
        assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]


class _CheaplyCopiedContext(PresentationContext):
    """A supported presentation context whose per-association copy is cheap.

    pynetdicom deep-copies every supported context for each new association: 171 storage SOP
    classes x 45 transfer syntaxes take about 60 ms, which caps senders that open one
    association per image. UIDs are immutable, so fresh lists are all a copy needs.
    """

    def __deepcopy__(self, memo: dict[int, object]) -> _CheaplyCopiedContext:
        clone = PresentationContext.__new__(_CheaplyCopiedContext)
        clone.__dict__.update({k: list(v) if isinstance(v, list) else v for k, v in self.__dict__.items()})
        return clone


def _cheaply_copied(context: PresentationContext) -> _CheaplyCopiedContext:
    clone = PresentationContext.__new__(_CheaplyCopiedContext)
    clone.__dict__.update(context.__dict__)
    return clone


def build_ae(node: NodeConfig) -> AE:
    """An AE that accepts every storage SOP class and transfer syntax pynetdicom knows, plus
    Verification; only associations called `node.ae_title` (and, if listed, from allowed callers)."""
    ae = AE(ae_title=node.ae_title)
    ae.require_called_aet = True
    ae.require_calling_aet = list(node.allowed_calling_ae_titles)
    ae.maximum_associations = node.max_associations
    ae.acse_timeout = node.acse_timeout
    ae.dimse_timeout = node.dimse_timeout
    ae.network_timeout = node.network_timeout
    ae.maximum_pdu_size = node.maximum_pdu_size
    syntaxes = list(ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(cast(str, context.abstract_syntax), syntaxes)
    ae.add_supported_context(Verification, syntaxes)
    return ae


def start_server(node: NodeConfig, pipeline: StorePipeline) -> ThreadedAssociationServer:
    """Listen on `node.bind:node.port` (port 0: any free port) in background threads."""
    ae = build_ae(node)
    limits = ReceiveLimits(node.max_object_bytes)
    handlers: list[Any] = [
        (evt.EVT_C_STORE, handle_store(pipeline)),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_CONN_OPEN, set_tcp_nodelay),
        (evt.EVT_CONN_OPEN, limits.on_connection_open),
        (evt.EVT_CONN_CLOSE, release_unassociated),
    ]
    contexts: list[PresentationContext] = [_cheaply_copied(c) for c in ae.supported_contexts]
    server = ae.start_server((node.bind, node.port), block=False, evt_handlers=handlers, contexts=contexts)
    assert server is not None  # block=False always returns the server
    return server

