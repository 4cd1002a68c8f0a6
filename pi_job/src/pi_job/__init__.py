"""Monte-Carlo estimation of pi over a beanstalkd work queue."""

__version__ = "0.1.0"
