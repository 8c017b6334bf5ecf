package graphql

import (
	"html/template"
	"net/http"
)

// graphiqlPage is GraphiQL for trying the API in a browser. It is
// gqlgen's page (the same pinned assets, with their subresource
// integrity) with one addition: a user signed in to the dashboard has a
// session cookie, and a POST made with it needs the session's CSRF token,
// so the page reads the token from /api/v1/auth/session and sends it. A
// program's user puts {"Authorization": "Bearer <API key>"} in the
// headers pane instead. Headers are not kept in the browser's storage,
// so neither is a key.
var graphiqlPage = template.Must(template.New("graphiql").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Tether GraphQL</title>
<style>body { margin: 0; } #graphiql { height: 100vh; } .loading { height: 100%; display: flex; align-items: center; justify-content: center; font: 2rem sans-serif; }</style>
<script src="https://cdn.jsdelivr.net/npm/react@18.2.0/umd/react.production.min.js" integrity="sha256-S0lp+k7zWUMk2ixteM6HZvu8L9Eh//OVrt+ZfbCpmgY=" crossorigin="anonymous"></script>
<script src="https://cdn.jsdelivr.net/npm/react-dom@18.2.0/umd/react-dom.production.min.js" integrity="sha256-IXWO0ITNDjfnNXIu5POVfqlgYoop36bDzhodR6LW5Pc=" crossorigin="anonymous"></script>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/graphiql@4.1.2/graphiql.min.css" integrity="sha256-MEh+B2NdMSpj9kexQNN3QKc8UzMrCXW/Sx/phcpuyIU=" crossorigin="anonymous">
</head>
<body>
<div id="graphiql"><div class="loading">Loading GraphiQL…</div></div>
<script src="https://cdn.jsdelivr.net/npm/graphiql@4.1.2/graphiql.min.js" integrity="sha256-hnImuor1znlJkD/FOTL3jayfS/xsyNoP04abi8bFJWs=" crossorigin="anonymous"></script>
<script>
(async () => {
  const endpoint = {{.Endpoint}};
  const url = location.protocol + '//' + location.host + endpoint;
  const subscriptionUrl = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + endpoint;
  const headers = {};
  try {
    // A signed-in user's CSRF token (X-CSRF-Token); without a session
    // this is 401 and the headers pane must carry an API key.
    const r = await fetch({{.Session}}, {credentials: 'same-origin'});
    if (r.ok) {
      const s = await r.json();
      if (s.csrf_token) headers['X-CSRF-Token'] = s.csrf_token;
    }
  } catch (e) {}
  const fetcher = GraphiQL.createFetcher({url, subscriptionUrl, headers});
  ReactDOM.render(React.createElement(GraphiQL, {
    fetcher,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: false,
    defaultQuery: {{.DefaultQuery}},
  }), document.getElementById('graphiql'));
})();
</script>
</body>
</html>
`))

// graphiqlDefaultQuery is what the page opens with: the one query the
// API exists for.
const graphiqlDefaultQuery = `# Tether's GraphQL API. Signed in to the dashboard, queries run as you;
# otherwise add {"Authorization": "Bearer <API key>"} under Headers.
{
  devices(first: 20) {
    devices {
      id
      name
      presence { status since }
      latest { key ts value }
      shadow { state { desired reported delta } }
      alerts { id severity status }
    }
  }
}
`

// graphiqlHandler serves the page for the API at endpoint.
func graphiqlHandler(endpoint string) http.HandlerFunc {
	data := struct{ Endpoint, Session, DefaultQuery string }{endpoint, "/api/v1/auth/session", graphiqlDefaultQuery}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		// Only a write to a client that has gone can fail here.
		_ = graphiqlPage.Execute(w, data)
	}
}
