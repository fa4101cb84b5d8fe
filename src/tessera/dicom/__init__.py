"""DICOM de-identification to PS3.15 Annex E, keyed pseudonyms, and a C-STORE node.

``deidentify(ds, profile, pseudonymizer) -> Report`` applies the Basic Application Level
Confidentiality Profile (Table E.1-1) and its options to a pydicom dataset in place;
:func:`deidentify_file` / :func:`deidentify_bytes` handle whole files (file meta,
burned-in text quarantine) and never raise for bad input.  Storage and the
pseudonym-to-identity table are injected (:class:`ObjectSink`, :class:`IdentityStore`).
"""

from tessera.dicom.batch import BatchSettings as BatchSettings
from tessera.dicom.batch import discover as discover
from tessera.dicom.batch import run_batch as run_batch
from tessera.dicom.burnedin import burned_in_risks as burned_in_risks
from tessera.dicom.engine import Action as Action
from tessera.dicom.engine import Report as Report
from tessera.dicom.engine import deidentify as deidentify
from tessera.dicom.files import Outcome as Outcome
from tessera.dicom.files import deidentify_bytes as deidentify_bytes
from tessera.dicom.files import deidentify_file as deidentify_file
from tessera.dicom.files import deidentify_instance as deidentify_instance
from tessera.dicom.profile import TABLE as TABLE
from tessera.dicom.profile import Option as Option
from tessera.dicom.profile import Profile as Profile
from tessera.dicom.profile import parse_option as parse_option
from tessera.dicom.pseudonym import Pseudonymizer as Pseudonymizer
from tessera.dicom.stores import FolderIdentityStore as FolderIdentityStore
from tessera.dicom.stores import FolderSink as FolderSink
from tessera.dicom.stores import IdentityStore as IdentityStore
from tessera.dicom.stores import ObjectSink as ObjectSink

__all__ = [
    "TABLE",
    "Action",
    "BatchSettings",
    "FolderIdentityStore",
    "FolderSink",
    "IdentityStore",
    "ObjectSink",
    "Option",
    "Outcome",
    "Profile",
    "Pseudonymizer",
    "Report",
    "burned_in_risks",
    "deidentify",
    "deidentify_bytes",
    "deidentify_file",
    "deidentify_instance",
    "discover",
    "parse_option",
    "run_batch",
]
