//! Decorators of the storage traits, generated from the traits'
//! declarations: a storage trait is declared once, inside
//! [`decorated_traits!`], and the macro writes the trait and a forwarding
//! implementation for [`Decorated`], so that timing every call (the
//! server's profiler) or failing calls on purpose (a test) is one
//! [`Around`] implementation, never a hand-written forwarder per method.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, as `async_trait` methods return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a decorator does around every call of a store.
pub trait Around: Send + Sync + Debug + 'static {
    /// Runs `call`, the store's method named `method` (`"acquire"`,
    /// `"get"`), and returns its output.
    fn around<'a, T: Send + 'a>(&'a self, method: &'static str, call: BoxFuture<'a, T>) -> BoxFuture<'a, T>;
}

/// A store (`S` is `dyn BlobStore` or `dyn WorldStore`) whose every call
/// passes through `around`. It implements the same traits as `inner`.
#[derive(Debug)]
pub struct Decorated<S: ?Sized, A> {
    pub inner: Arc<S>,
    pub around: A,
}

impl<S: ?Sized, A> Decorated<S, A> {
    pub fn new(inner: Arc<S>, around: A) -> Self {
        Self { inner, around }
    }
}

/// Declares storage traits (each `pub trait` of `async fn`s taking
/// `&self`) and implements each for `Decorated<dyn $whole, A>`, forwarding
/// every method to the inner store through [`Around::around`].
macro_rules! decorated_traits {
    (over $whole:ident; $(
        $(#[$trait_meta:meta])*
        pub trait $role:ident {
            $(
                $(#[$method_meta:meta])*
                async fn $method:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> $ret:ty;
            )*
        }
    )*) => {
        $(
            $(#[$trait_meta])*
            #[async_trait::async_trait]
            pub trait $role: Send + Sync + std::fmt::Debug {
                $(
                    $(#[$method_meta])*
                    async fn $method(&self $(, $arg: $ty)*) -> $ret;
                )*
            }

            #[async_trait::async_trait]
            impl<A: $crate::decorate::Around> $role for $crate::decorate::Decorated<dyn $whole, A> {
                $(
                    async fn $method(&self $(, $arg: $ty)*) -> $ret {
                        self.around.around(stringify!($method), self.inner.$method($($arg),*)).await
                    }
                )*
            }
        )*
    };
}

pub(crate) use decorated_traits;
