"""Reads a DCAT-AP JSON-LD document the way a DCAT tool does: parsed by rdflib into triples (its
@context inline, nothing fetched), then asked with SPARQL what a harvester asks. Prints one JSON
object for the Rust test that runs it to check:

    python3 tests/python/dcat_check.py FILE

Needs: pip install rdflib (6 or later parses JSON-LD itself). Without it this exits non-zero, so
the test fails instead of passing unchecked.
"""

import json
import sys

try:
    import rdflib
except ImportError:
    sys.exit("rdflib is not installed: pip install rdflib")

PREFIXES = """
PREFIX dcat: <http://www.w3.org/ns/dcat#>
PREFIX dct: <http://purl.org/dc/terms/>
PREFIX foaf: <http://xmlns.com/foaf/0.1/>
PREFIX skos: <http://www.w3.org/2004/02/skos/core#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
"""

DATASETS = PREFIXES + """
SELECT ?dataset ?identifier ?title ?publisherName ?publisherId ?accessRights ?periodicity ?theme ?themeLabel
WHERE {
  ?catalog a dcat:Catalog ; dcat:dataset ?dataset .
  ?dataset a dcat:Dataset ;
    dct:identifier ?identifier ;
    dct:title ?title ;
    dct:publisher ?publisher ;
    dct:accessRights ?accessRights ;
    dct:accrualPeriodicity ?periodicity ;
    dcat:theme ?theme .
  ?publisher a foaf:Agent ; foaf:name ?publisherName ; dct:identifier ?publisherId .
  ?theme skos:prefLabel ?themeLabel .
}
ORDER BY ?identifier
"""

DISTRIBUTIONS = PREFIXES + """
SELECT ?identifier ?distribution ?accessURL ?format ?formatLabel ?title
WHERE {
  ?dataset dct:identifier ?identifier ; dcat:distribution ?distribution .
  ?distribution a dcat:Distribution ; dcat:accessURL ?accessURL ; dct:format ?format ; dct:title ?title .
  OPTIONAL { ?format rdfs:label ?formatLabel }
}
ORDER BY ?identifier
"""


def main():
    graph = rdflib.Graph()
    graph.parse(sys.argv[1], format="json-ld")
    catalogs = list(graph.subjects(rdflib.RDF.type, rdflib.URIRef("http://www.w3.org/ns/dcat#Catalog")))
    datasets = []
    for row in graph.query(DATASETS):
        datasets.append(
            {
                "iri": str(row.dataset),
                "identifier": str(row.identifier),
                "title": str(row.title),
                "title_language": row.title.language,
                "publisher_name": str(row.publisherName),
                "publisher_id": str(row.publisherId),
                "access_rights": str(row.accessRights),
                "periodicity": str(row.periodicity),
                "theme": str(row.theme),
                "theme_label": str(row.themeLabel),
            }
        )
    distributions = [
        {
            "dataset": str(row.identifier),
            "iri": str(row.distribution),
            "access_url": str(row.accessURL),
            # A vocabulary IRI, or the label of a format the vocabulary has no term for.
            "format": str(row.format) if isinstance(row.format, rdflib.URIRef) else str(row.formatLabel),
            "title": str(row.title),
        }
        for row in graph.query(DISTRIBUTIONS)
    ]
    print(
        json.dumps(
            {
                "rdflib": rdflib.__version__,
                "triples": len(graph),
                "catalogs": [str(c) for c in catalogs],
                "datasets": datasets,
                "distributions": distributions,
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
