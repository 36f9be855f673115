//! A router that keeps a table of the routes it registers: each service builds its routes with
//! [`Routes`], so the method and path of every route it serves can be listed
//! ([`Routes::table`]) — and checked against the service's OpenAPI description — without a
//! second, hand-kept list that could drift from the router.

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};

/// The HTTP methods a route is registered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteMethod {
    /// `GET` (axum answers `HEAD` with it too).
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
}

impl RouteMethod {
    /// The method's name, lowercase as OpenAPI path items spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
            Self::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Put => MethodFilter::PUT,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

/// One registered route: a method on a path template (`/v1/agents/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The method.
    pub method: RouteMethod,
    /// The path template, as axum and OpenAPI both write it.
    pub path: String,
}

/// An axum [`Router`] under construction, with the table of what it routes.
#[must_use]
pub struct Routes<S = ()> {
    router: Router<S>,
    table: Vec<Route>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Routes `method` on `path` to `handler` (several methods on one path share the path).
    pub fn on<H, T>(mut self, method: RouteMethod, path: &str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.router = self.router.route(path, on(method.filter(), handler));
        self.table.push(Route {
            method,
            path: path.to_owned(),
        });
        self
    }

    /// `GET path`.
    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.on(RouteMethod::Get, path, handler)
    }

    /// `POST path`.
    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.on(RouteMethod::Post, path, handler)
    }

    /// `PUT path`.
    pub fn put<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.on(RouteMethod::Put, path, handler)
    }

    /// `DELETE path`.
    pub fn delete<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.on(RouteMethod::Delete, path, handler)
    }

    /// These routes and `other`'s.
    pub fn merge(mut self, other: Self) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// The routes with their state given, ready to merge with routes of another state.
    pub fn with_state<S2: Clone + Send + Sync + 'static>(self, state: S) -> Routes<S2> {
        Routes {
            router: self.router.with_state(state),
            table: self.table,
        }
    }

    /// What is routed, sorted by path then method.
    pub fn table(&self) -> Vec<Route> {
        let mut table = self.table.clone();
        table.sort();
        table
    }

    /// The router.
    pub fn into_router(self) -> Router<S> {
        self.router
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn the_table_lists_what_the_router_answers() {
        let routes = Routes::<()>::new()
            .get("/a", || async { "get a" })
            .post("/a", || async { "post a" })
            .delete("/b/{id}", || async { "delete b" });
        assert_eq!(
            routes.table(),
            vec![
                Route {
                    method: RouteMethod::Get,
                    path: "/a".into()
                },
                Route {
                    method: RouteMethod::Post,
                    path: "/a".into()
                },
                Route {
                    method: RouteMethod::Delete,
                    path: "/b/{id}".into()
                },
            ]
        );
        let router = routes.into_router();
        for (method, uri, expected) in [
            ("GET", "/a", StatusCode::OK),
            ("POST", "/a", StatusCode::OK),
            ("DELETE", "/b/7", StatusCode::OK),
            ("PUT", "/a", StatusCode::METHOD_NOT_ALLOWED),
            ("GET", "/c", StatusCode::NOT_FOUND),
        ] {
            let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
            let status = router.clone().oneshot(request).await.unwrap().status();
            assert_eq!(status, expected, "{method} {uri}");
        }
    }
}
