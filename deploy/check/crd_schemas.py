"""JSON schemas for the custom resources the overlays use, which the Kubernetes schema lacks.

Only the fields deploy/k8s writes, typed as the CRDs type them (KEDA 2.x ScaledObject,
cert-manager v1 Certificate); anything else is rejected (additionalProperties: false), so a
misspelt field fails here instead of being dropped by the API server. Written from the projects'
documented fields, not copied from their CRDs. Kubernetes types (ObjectMeta, the HPA behavior)
refer to the Kubernetes schema kubernetes-validate ships.
"""

K8S = "/api/_definitions.json#/$defs/"


def _obj(properties, required=()):
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


def _resource(api_version, kind, spec):
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://kubernetes.io/api/arf-crd-{kind.lower()}.json",
        **_obj({
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {"$ref": K8S + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "spec": spec,
        }, ["apiVersion", "kind", "metadata", "spec"]),
    }


_STR = {"type": "string", "minLength": 1}
_INT = {"type": "integer", "minimum": 0}
# KEDA reads every trigger metadata value as a string ("16", not 16).
_PROMETHEUS_METADATA = _obj({
    "serverAddress": {"type": "string", "pattern": "^https?://"},
    "query": _STR,
    "threshold": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
    "activationThreshold": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
    "namespace": _STR,
    "ignoreNullValues": {"enum": ["true", "false"]},
    "unsafeSsl": {"enum": ["true", "false"]},
}, ["serverAddress", "query", "threshold"])

SCALED_OBJECT = _resource("keda.sh/v1alpha1", "ScaledObject", _obj({
    "scaleTargetRef": _obj({"name": _STR, "kind": _STR, "apiVersion": _STR,
                            "envSourceContainerName": _STR}, ["name"]),
    "pollingInterval": _INT,
    "cooldownPeriod": _INT,
    "initialCooldownPeriod": _INT,
    "minReplicaCount": _INT,
    "maxReplicaCount": {"type": "integer", "minimum": 1},
    "advanced": _obj({
        "restoreToOriginalReplicaCount": {"type": "boolean"},
        "horizontalPodAutoscalerConfig": _obj({
            "name": _STR,
            "behavior": {"$ref": K8S + "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"},
        }),
    }),
    "triggers": {"type": "array", "minItems": 1, "items": _obj({
        "type": {"const": "prometheus"},
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "metricType": {"enum": ["AverageValue", "Value"]},
        "metadata": _PROMETHEUS_METADATA,
        "authenticationRef": _obj({"name": _STR, "kind": {"enum": ["TriggerAuthentication",
                                                                    "ClusterTriggerAuthentication"]}},
                                  ["name"]),
    }, ["type", "metadata"])},
}, ["scaleTargetRef", "triggers"]))

_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"}
_USAGES = ["signing", "digital signature", "content commitment", "key encipherment",
           "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
           "decipher only", "any", "server auth", "client auth", "code signing",
           "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
           "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]

CERTIFICATE = _resource("cert-manager.io/v1", "Certificate", _obj({
    "secretName": _STR,
    "issuerRef": _obj({"name": _STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                       "group": _STR}, ["name"]),
    "commonName": _STR,
    "dnsNames": {"type": "array", "minItems": 1, "items": _STR},
    "duration": _DURATION,
    "renewBefore": _DURATION,
    "isCA": {"type": "boolean"},
    "usages": {"type": "array", "items": {"enum": _USAGES}},
    "privateKey": _obj({
        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
        "size": {"type": "integer"},
        "encoding": {"enum": ["PKCS1", "PKCS8"]},
        "rotationPolicy": {"enum": ["Never", "Always"]},
    }),
}, ["secretName", "issuerRef"]))

# (apiVersion, kind) -> schema: exactly the kinds kubernetes-validate may not know.
SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("cert-manager.io/v1", "Certificate"): CERTIFICATE,
}
